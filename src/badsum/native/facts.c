/*
 * The packet facts of badsum.native._fastscan: one FACTS_DTYPE row (badsum/flows/facts.py) per
 * packet, field for field what `fact_of_frame(decode_frame(...))` gives (the spec is that function
 * and its docstrings). Only headers are read, never payloads. Whatever the decoder does that is
 * not written out here (GRE, Geneve, IPIP, MPLS, UDP-Lite, PPP, unknown link types, deep nesting)
 * is deferred, whole, to it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fs_module.h"

/* The facts must be the decoder's own answer, so the link walk mirrors wire/link.py: eight VLAN
 * tags, and a header cut short or without IP is "no packet", not a deferral. */
static const link_mode FACTS_LINK = {.max_tags = MAX_VLAN_TAGS, .cut = NET_NONE, .unsure = NET_NONE};

/* IPF_* and QF_* of facts.py */
enum { IPF_DF = 0x01, IPF_FRAGMENT = 0x02, IPF_OUTER_DF = 0x04, IPF_UDP_TUNNEL = 0x08, IPF_LATER_FRAGMENT = 0x10 };
enum { QF_DF = 0x01 };

/* The decoder stops at badsum.wire.frame.MAX_DEPTH; a quote sits one deeper than its ICMP error,
 * so a live packet stops one short of it. */
enum { FACT_MAX_DEPTH = MAX_DEPTH - 1, FACT_PREFETCH = 16 };

/* What one IP level hands to the next (VXLAN) level. */
typedef struct {
    int inner; /* a VXLAN header was read: the inner Ethernet frame starts at inner_pos */
    size_t inner_pos;
    size_t limit; /* the decoder's `end` for the inner frame (may pass the capture) */
} fact_next;


static inline int icmp_error(int v6, unsigned type)
{
    return v6 ? (type >= 1 && type <= 4) : (type == 3 || type == 4 || type == 5 || type == 11 || type == 12);
}

/* The packet an ICMP error quotes at qpos: the q_* fields (facts._quote). */
static void fact_quote(fact_row *f, const uint8_t *p, size_t cap, size_t qpos, int v6)
{
    size_t qend, l4;
    unsigned proto;
    int l4_decoded;
    if (!v6) {
        if (cap < qpos + IPV4_MIN_HLEN || (p[qpos] >> 4) != 4 || (p[qpos] & 0x0f) < 5)
            return;
        const uint8_t *h = p + qpos;
        size_t hlen = (size_t)(h[0] & 0x0f) * 4;
        unsigned total = be16(h + 2);
        qend = qpos + (total < hlen ? hlen : total); /* a quote keeps the length it had */
        l4 = qpos + hlen;
        proto = h[9];
        memcpy(f->q_src, h + 12, 4);
        memcpy(f->q_dst, h + 16, 4);
        f->q_ipid = (uint16_t)be16(h + 4);
        f->q_len = (uint16_t)total;
        f->q_flags = (h[6] & 0x40) ? QF_DF : 0;
        l4_decoded = (be16(h + 6) & 0x1fff) == 0;
    } else {
        if (cap < qpos + IPV6_HLEN || (p[qpos] >> 4) != 6)
            return;
        const uint8_t *h = p + qpos;
        unsigned plen = be16(h + 4);
        ipv6_walk w;
        walk_ipv6(p, cap, qpos, &w);
        qend = ipv6_end(qpos, plen, &w, cap);
        l4 = w.upper;
        proto = w.proto;
        memcpy(f->q_src, h + 8, 16);
        memcpy(f->q_dst, h + 24, 16);
        f->q_len = (uint16_t)(IPV6_HLEN + plen > 0xffff ? 0xffff : IPV6_HLEN + plen);
        f->q_flags = QF_DF;
        l4_decoded = !w.frag || w.frag_off == 0;
    }
    f->q_proto = (uint8_t)proto;
    if (!l4_decoded || !(proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP || proto == IPPROTO_UDPLITE))
        return;
    size_t n = avail(l4, qend, cap);
    if (n >= 4) { /* RFC 792: the first 64 bits of the datagram hold the ports */
        f->q_sport = (uint16_t)be16(p + l4);
        f->q_dport = (uint16_t)be16(p + l4 + 2);
    }
    if (proto == IPPROTO_TCP && n >= 8)
        f->q_seq = be32(p + l4 + 4);
}

/*
 * The upper layer of a live IP packet (frame._Decoder.transport). l4: its offset; l4len: the
 * decoder's l4_length; end: the decoder's `end` bound. Fills the L4 fields, and `next` for VXLAN.
 */
static int fact_l4(fact_row *f, const uint8_t *p, size_t cap, int v6, int fragment, int depth,
                   size_t l4, size_t l4len, size_t end, const uint8_t *port_kind, fact_next *next)
{
    size_t n = avail(l4, end, cap);
    const uint8_t *b = p + l4;
    switch (f->proto) {
    case IPPROTO_TCP:
        if (n < CSUM_AT_TCP + 2) /* tcp.decode reads through the checksum */
            return R_DONE;
        f->sport = (uint16_t)be16(b);
        f->dport = (uint16_t)be16(b + 2);
        f->seq = be32(b + 4);
        f->ack = be32(b + 8);
        f->tcp_flags = b[13];
        f->win = (uint16_t)be16(b + 14);
        {
            size_t doff = (size_t)(b[12] >> 4) * 4;
            f->payload = (uint32_t)(l4len > doff ? l4len - doff : 0);
        }
        return R_DONE;
    case IPPROTO_UDP: {
        if (n < UDP_HLEN)
            return R_DONE;
        f->sport = (uint16_t)be16(b);
        f->dport = (uint16_t)be16(b + 2);
        size_t ulen = be16(b + 4);
        if (ulen == 0)
            ulen = l4len; /* RFC 2675 jumbo UDP */
        f->payload = (uint32_t)(ulen > UDP_HLEN ? ulen - UDP_HLEN : 0);
        if (fragment)
            return R_DONE; /* tunnels are followed in whole datagrams only */
        unsigned kind = port_kind[f->dport];
        if (kind == UDP_TUNNEL_NONE)
            return R_DONE;
        if (kind != UDP_TUNNEL_VXLAN)
            return R_DEFER;
        /* RFC 7348: an 8-byte header (the decoder does not insist on the I flag), then Ethernet */
        if (n < UDP_HLEN + VXLAN_HLEN)
            return R_DONE;
        if (depth + 1 >= FACT_MAX_DEPTH)
            return R_DEFER;
        next->inner = 1;
        next->inner_pos = l4 + UDP_HLEN + VXLAN_HLEN;
        next->limit = end;
        return R_DONE;
    }
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6: {
        if ((f->proto == IPPROTO_ICMPV6) != v6 || n < 4)
            return R_DONE; /* ICMP in IPv6 or ICMPv6 in IPv4: not decoded */
        f->icmp_type = b[0];
        f->icmp_code = b[1];
        uint32_t rest = n >= 8 ? be32(b + 4) : 0;
        if (v6 ? b[0] == 2 : (b[0] == 3 && b[1] == 4))
            f->icmp_mtu = v6 ? rest : (rest & 0xffff);
        f->payload = (uint32_t)(l4len > ICMP_HLEN ? l4len - ICMP_HLEN : 0);
        size_t q = l4 + (n >= ICMP_HLEN ? ICMP_HLEN : 4);
        if (icmp_error(v6, b[0]) && n > q - l4)
            fact_quote(f, p, cap, q, v6);
        return R_DONE;
    }
    case IPPROTO_IPIP:
    case IPPROTO_IPV6:
    case IPPROTO_GRE:
    case IPPROTO_UDPLITE:
        return R_DEFER; /* the decoder's */
    default:
        return R_DONE; /* IGMP, SCTP, ESP, ...: no fields in a fact */
    }
}

/* One live IP packet at `pos`; limit: where the enclosing packet ends (the frame's wire length at
 * depth 0). R_DONE with f->valid 0 when the decoder finds no packet there. */
static int fact_ip(fact_row *f, const uint8_t *p, size_t cap, size_t wire, int v6, size_t pos,
                   size_t limit, int depth, const uint8_t *port_kind, fact_next *next)
{
    size_t end, l4;
    int fragment, decode_l4;
    next->inner = 0;
    if (!v6) {
        if (cap < pos + IPV4_MIN_HLEN || (p[pos] >> 4) != 4 || (p[pos] & 0x0f) < 5)
            return R_DONE;
        const uint8_t *h = p + pos;
        size_t hlen = (size_t)(h[0] & 0x0f) * 4;
        size_t total = be16(h + 2);
        unsigned ff = be16(h + 6);
        if (total == 0)
            end = limit; /* TSO/LSO: the frame's length is the packet's */
        else
            end = pos + (total < hlen ? hlen : total);
        l4 = pos + hlen;
        f->ipver = 4;
        f->proto = h[9];
        memcpy(f->src, h + 12, 4);
        memcpy(f->dst, h + 16, 4);
        f->ipid = (uint16_t)be16(h + 4);
        f->ip_len = (uint32_t)(total ? total : wire > pos ? wire - pos : 0);
        f->ip_flags = (ff & 0x4000 ? IPF_DF : 0) | (ff & 0x3fff ? IPF_FRAGMENT : 0) |
                      (ff & 0x1fff ? IPF_LATER_FRAGMENT : 0);
        fragment = (ff & 0x3fff) != 0;
        decode_l4 = (ff & 0x1fff) == 0;
    } else {
        if (cap < pos + IPV6_HLEN || (p[pos] >> 4) != 6)
            return R_DONE;
        const uint8_t *h = p + pos;
        size_t plen = be16(h + 4);
        ipv6_walk w;
        walk_ipv6(p, cap, pos, &w);
        end = ipv6_end(pos, plen, &w, limit);
        l4 = w.upper;
        f->ipver = 6;
        f->proto = (uint8_t)w.proto;
        memcpy(f->src, h + 8, 16);
        memcpy(f->dst, h + 24, 16);
        if (w.jumbo) {
            uint64_t len = IPV6_HLEN + (uint64_t)w.jumbo_len;
            f->ip_len = len > 0xffffffffu ? 0xffffffffu : (uint32_t)len;
        } else {
            f->ip_len = (uint32_t)(plen ? IPV6_HLEN + plen : wire > pos ? wire - pos : 0);
        }
        f->ip_flags = IPF_DF | (w.frag ? IPF_FRAGMENT : 0) | (w.frag_off ? IPF_LATER_FRAGMENT : 0);
        fragment = w.frag && (w.frag_more || w.frag_off);
        decode_l4 = !w.frag || w.frag_off == 0;
    }
    f->valid = 1;
    f->depth = (uint8_t)depth;
    if (!decode_l4)
        return R_DONE;
    size_t l4len = end > l4 ? end - l4 : 0;
    return fact_l4(f, p, cap, v6, fragment, depth, l4, l4len, min_sz(end, limit), port_kind, next);
}

/* The fact of one frame: the innermost live packet, with the outermost's length and DF. */
static int fact_packet(fact_row *f, unsigned linktype, const uint8_t *p, size_t cap, size_t wire,
                       const uint8_t *port_kind)
{
    size_t l3 = 0;
    int net = link_walk(linktype, p, cap, &l3, &FACTS_LINK);
    if (net != NET_IPV4 && net != NET_IPV6)
        return net == NET_DEFER ? R_DEFER : R_DONE;
    fact_next next;
    if (fact_ip(f, p, cap, wire, net == NET_IPV6, l3, wire, 0, port_kind, &next) != R_DONE)
        return R_DEFER;
    if (!f->valid)
        return R_DONE;
    uint32_t outer_len = f->ip_len;
    uint8_t outer_df = f->ipver == 6 || (f->ip_flags & IPF_DF);
    for (int depth = 1; next.inner; depth++) {
        /* VXLAN: inner Ethernet read within the datagram's bound; its IP header only within the capture */
        size_t bound = min_sz(next.limit, cap), pos = next.inner_pos;
        if (bound < pos + ETH_HLEN)
            break;
        net = link_walk(LINKTYPE_ETHERNET, p + pos, bound - pos, &l3, &FACTS_LINK);
        l3 += pos;
        if (net == NET_DEFER)
            return R_DEFER;
        if (net == NET_NONE)
            break;
        fact_row inner;
        memset(&inner, 0, sizeof inner);
        fact_next deeper;
        if (fact_ip(&inner, p, cap, wire, net == NET_IPV6, l3, next.limit, depth, port_kind, &deeper) != R_DONE)
            return R_DEFER;
        if (!inner.valid)
            break;
        inner.frame = f->frame;
        inner.ts_ns = f->ts_ns;
        inner.ip_flags |= IPF_UDP_TUNNEL;
        *f = inner;
        next = deeper;
    }
    f->outer_len = outer_len;
    if (outer_df)
        f->ip_flags |= IPF_OUTER_DF;
    return R_DONE;
}

static void write_fact(uint8_t *dst, const fact_row *r)
{
#if HOST_BIG_ENDIAN
    fact_row o = *r;
    o.frame = to_le64(o.frame);
    o.ts_ns = (int64_t)to_le64((uint64_t)o.ts_ns);
    o.seq = to_le32(o.seq);
    o.ack = to_le32(o.ack);
    o.payload = to_le32(o.payload);
    o.ip_len = to_le32(o.ip_len);
    o.outer_len = to_le32(o.outer_len);
    o.icmp_mtu = to_le32(o.icmp_mtu);
    o.q_seq = to_le32(o.q_seq);
    o.sport = to_le16(o.sport);
    o.dport = to_le16(o.dport);
    o.ipid = to_le16(o.ipid);
    o.q_sport = to_le16(o.q_sport);
    o.q_dport = to_le16(o.q_dport);
    o.q_ipid = to_le16(o.q_ipid);
    o.q_len = to_le16(o.q_len);
    o.win = to_le16(o.win);
    memcpy(dst, &o, sizeof o);
#else
    memcpy(dst, r, sizeof *r);
#endif
}

typedef struct {
    const uint8_t *buf;
    size_t buf_len;
    const int64_t *offset;
    const uint32_t *caplen, *origlen;
    const uint16_t *linktype;
    const int64_t *ts_ns;
    const uint8_t *port_kind;
    size_t n;
    uint64_t first_frame;
    uint8_t *out;
    uint32_t *deferred;
} facts_args;

/* The loop the GIL is released around. Returns the number of deferred packets. */
static size_t facts_loop(const facts_args *a)
{
    size_t nd = 0;
    for (size_t i = 0; i < a->n; i++) {
        /* Only headers are read, one or two cache lines per packet, far apart: without a hint
         * each is a miss to memory, and the loop would wait on them one after another. */
        if (i + FACT_PREFETCH < a->n) {
            int64_t ahead = a->offset[i + FACT_PREFETCH];
            if (ahead >= 0 && (uint64_t)ahead + 128 <= a->buf_len) {
                __builtin_prefetch(a->buf + ahead);
                __builtin_prefetch(a->buf + ahead + 64);
            }
        }
        fact_row f;
        memset(&f, 0, sizeof f);
        f.frame = a->first_frame + i;
        f.ts_ns = a->ts_ns[i];
        int64_t off = a->offset[i];
        size_t cap = a->caplen[i], orig = a->origlen[i];
        int r = R_DEFER;
        if (off >= 0 && (uint64_t)off <= a->buf_len && cap <= a->buf_len - (size_t)off)
            r = fact_packet(&f, a->linktype[i], a->buf + off, cap, orig > cap ? orig : cap, a->port_kind);
        if (r == R_DEFER) {
            memset(&f, 0, sizeof f); /* nothing half-filled: the caller fills this row */
            f.frame = a->first_frame + i;
            f.ts_ns = a->ts_ns[i];
            a->deferred[nd++] = (uint32_t)i;
        }
        write_fact(a->out + sizeof(fact_row) * i, &f);
    }
    return nd;
}

/* ---- the entry point ---- */

enum { F_BUF, F_OFFSET, F_CAPLEN, F_ORIGLEN, F_LINKTYPE, F_TS, F_FIRST, F_PORTS, F_OUT, F_DEFERRED, F_NARGS };

static const arg_spec facts_args_spec[F_NARGS] = {
    [F_BUF] = {"buf", ARG_BYTES},
    [F_OFFSET] = {"offset", ARG_INTS, 8, ARG_SIGNED | ARG_PER_PACKET},
    [F_CAPLEN] = {"caplen", ARG_INTS, 4, ARG_PER_PACKET},
    [F_ORIGLEN] = {"origlen", ARG_INTS, 4, ARG_PER_PACKET},
    [F_LINKTYPE] = {"linktype", ARG_INTS, 2, ARG_PER_PACKET},
    [F_TS] = {"ts_ns", ARG_INTS, 8, ARG_SIGNED | ARG_PER_PACKET},
    [F_FIRST] = {"first_frame", ARG_U64},
    [F_PORTS] = {"port_kind", ARG_INTS, 1, 0, 65536},
    [F_OUT] = {"out", ARG_ROWS, sizeof(fact_row), ARG_WRITABLE, 0, "FACTS_DTYPE"},
    [F_DEFERRED] = {"deferred", ARG_INTS, 4, ARG_WRITABLE},
};

PyObject *fastscan_facts(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "facts", facts_args_spec, F_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = c.packets;
    if (v[F_OUT].items != n) {
        PyErr_Format(PyExc_ValueError, "out must be an array of %zd %d-byte FACTS_DTYPE rows", n, (int)sizeof(fact_row));
        goto done;
    }
    if (v[F_DEFERRED].items < n) {
        PyErr_Format(PyExc_ValueError, "deferred needs room for %zd indices, has %zd", n, v[F_DEFERRED].items);
        goto done;
    }
    facts_args a = {
        .buf = v[F_BUF].view->buf,
        .buf_len = (size_t)v[F_BUF].view->len,
        .offset = v[F_OFFSET].view->buf,
        .caplen = v[F_CAPLEN].view->buf,
        .origlen = v[F_ORIGLEN].view->buf,
        .linktype = v[F_LINKTYPE].view->buf,
        .ts_ns = v[F_TS].view->buf,
        .port_kind = v[F_PORTS].view->buf,
        .n = (size_t)n,
        .first_frame = v[F_FIRST].u,
        .out = v[F_OUT].view->buf,
        .deferred = v[F_DEFERRED].view->buf,
    };
    size_t n_deferred;
    Py_BEGIN_ALLOW_THREADS
    n_deferred = facts_loop(&a);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t((Py_ssize_t)n_deferred);
done:
    release_args(&c);
    return result;
}

const char facts_doc[] =
    "facts(buf, offset, caplen, origlen, linktype, ts_ns, first_frame, port_kind, out, deferred)\n"
    "     -> n_deferred\n"
    "\n"
    "The packet fact (badsum.flows.facts.FACTS_DTYPE) of every packet of a batch, into `out` (one\n"
    "row per packet). Packets it leaves to `fact_of_frame` are listed at the beginning of `deferred`\n"
    "(uint32 batch indices); their rows hold only frame and ts_ns.";
