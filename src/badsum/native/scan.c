/*
 * The checksum scan of badsum.native._fastscan. Judges every checksum the common packets carry
 * (IPv4 header, TCP, UDP, ICMP, ICMPv6; Ethernet/VLAN, SLL, SLL2, raw IP, NULL/LOOP; VXLAN inner
 * frames) exactly as docs/verdicts.md says, and defers every other packet, whole, to the Python
 * decoder. The integer codes and the issue row layout mirror badsum/checksum/verdict.py.
 *
 * Tunnel nesting is a bounded loop, not recursion; nothing is allocated while the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fs_module.h"

#define TP_STATUS_CSUMNOTREADY 0x8u
#define TP_STATUS_CSUM_VALID 0x80u
#define TP_STATUS_UNKNOWN 0xFFFFFFFFu

/* The scan may leave any frame to the decoder: whatever is odd about the link header goes there
 * (a fifth VLAN tag, a header cut short, an 802.3 length, an IP carrier the decoder may learn). */
enum { SCAN_AHEAD = 4 };

static const link_mode SCAN_LINK = {.max_tags = SCAN_VLAN_TAGS, .cut = NET_DEFER, .unsure = NET_DEFER};

/* ---- one packet ---- */

typedef struct {
    issue_row row; /* host byte order until written out */
    uint32_t ip_len; /* IP packet length, for the GSO flag */
} verdict;

typedef struct {
    const uint8_t *pkt; /* frame start: row offsets are relative to it */
    const uint8_t *port_kind;
    uint64_t frame;
    int n;
    verdict v[ROWS_MAX];
} packet_ctx;

/* The IP packet carrying a checksum: what the rows record about it. */
typedef struct {
    const uint8_t *ip;
    int ver;
    unsigned proto;
    uint32_t ip_len;
} ip_info;

static void fill_row(packet_ctx *c, verdict *v, const ip_info *ip, int depth, unsigned layer,
                     const uint8_t *field)
{
    issue_row *r = &v->row;
    memset(r, 0, sizeof *r);
    r->frame = c->frame;
    r->offset = (uint32_t)(field - c->pkt);
    r->layer = (uint8_t)layer;
    r->depth = (uint8_t)depth;
    r->ipver = (uint8_t)ip->ver;
    r->proto = (uint8_t)ip->proto;
    if (ip->ver == 4) {
        memcpy(r->src, ip->ip + 12, 4);
        memcpy(r->dst, ip->ip + 16, 4);
    } else {
        memcpy(r->src, ip->ip + 8, 16);
        memcpy(r->dst, ip->ip + 24, 16);
    }
    v->ip_len = ip->ip_len;
}

typedef struct {
    int has_ports;
    unsigned sport, dport;
    int status; /* the L4 status before the kernel rules, for HDR_OFFLOAD */
    const uint8_t *inner; /* VXLAN inner frame, or NULL */
    size_t inner_len;
} l4_result;

/*
 * Judge the L4 checksum of one IP packet. l4cap: bytes of the L4 segment captured (at most l4len);
 * pseudo: the unfolded pseudo-header sum (0 for ICMP). Pushes one row.
 */
static int judge_l4(packet_ctx *c, int depth, const ip_info *ip, const uint8_t *l4, uint32_t l4len,
                    size_t l4cap, uint64_t pseudo, l4_result *out)
{
    size_t field;
    unsigned layer, kind = UDP_TUNNEL_NONE;
    switch (ip->proto) {
    case IPPROTO_TCP:
        if (l4len < TCP_MIN_HLEN)
            return R_DEFER;
        if (l4cap >= 13) {
            unsigned doff = (unsigned)(l4[12] >> 4) * 4;
            if (doff < TCP_MIN_HLEN || doff > l4len)
                return R_DEFER;
        }
        field = CSUM_AT_TCP;
        layer = LAYER_TCP;
        break;
    case IPPROTO_UDP:
        if (l4len < UDP_HLEN)
            return R_DEFER;
        field = CSUM_AT_UDP;
        layer = LAYER_UDP;
        if (l4cap >= 4) {
            kind = c->port_kind[be16(l4 + 2)];
            if (kind > UDP_TUNNEL_VXLAN) /* Geneve, GRE-in-UDP, MPLS-in-UDP: the decoder's */
                return R_DEFER;
        }
        /* tshark takes the L4 length from IP; a UDP length that disagrees is the decoder's */
        if (l4cap >= UDP_HLEN && be16(l4 + 4) != l4len)
            return R_DEFER;
        break;
    case IPPROTO_ICMP:
    case IPPROTO_ICMPV6:
        if (l4len < ICMP_HLEN)
            return R_DEFER;
        field = ip->proto == IPPROTO_ICMP ? CSUM_AT_ICMP : CSUM_AT_ICMPV6;
        layer = ip->proto == IPPROTO_ICMP ? LAYER_ICMP : LAYER_ICMPV6;
        break;
    default:
        return R_DEFER;
    }

    /* Ports count as known once the header through the checksum field is captured. */
    out->has_ports = (layer == LAYER_TCP || layer == LAYER_UDP) && l4cap >= field + 2;
    out->sport = out->has_ports ? be16(l4) : 0;
    out->dport = out->has_ports ? be16(l4 + 2) : 0;
    out->inner = NULL;
    out->inner_len = 0;

    verdict *v = &c->v[c->n++];
    fill_row(c, v, ip, depth, layer, l4 + field);
    issue_row *r = &v->row;
    r->sport = (uint16_t)out->sport;
    r->dport = (uint16_t)out->dport;

    if (l4cap < l4len) {
        /* verdicts.md step 1: cut by the snap length */
        if (kind == UDP_TUNNEL_VXLAN)
            return R_DEFER; /* the decoder judges what of the inner frame survived */
        r->stored = l4cap >= field + 2 ? be16(l4 + field) : 0;
        r->status = ST_UNVERIFIABLE;
        r->flags = FL_TRUNCATED;
        out->status = ST_UNVERIFIABLE;
        return R_DONE;
    }

    unsigned stored = be16(l4 + field);
    uint32_t s = fold(pseudo + csum_without(l4, l4len, field));
    unsigned computed = ~s & 0xffffu;
    if (layer == LAYER_UDP && computed == 0)
        computed = 0xffff; /* RFC 768 */
    r->stored = stored;
    r->computed = computed;

    int status;
    if (layer == LAYER_UDP && stored == 0) {
        if (ip->ver == 4) {
            status = ST_ZERO_ALLOWED;
        } else if (kind != UDP_TUNNEL_NONE) {
            status = ST_ZERO_ALLOWED; /* RFC 6935/6936 tunnel exemption */
            r->flags |= FL_TUNNEL_ZERO;
        } else {
            status = ST_ZERO_INVALID; /* RFC 8200 section 8.1 */
        }
    } else if (fold((uint64_t)s + stored) == 0xffff) {
        status = ST_OK;
    } else if (layer != LAYER_ICMP && stored == fold(pseudo)) {
        status = ST_PARTIAL; /* CHECKSUM_PARTIAL: the pseudo-header sum alone */
        r->extra = l4len;
    } else {
        status = ST_BAD;
    }
    r->status = (uint8_t)status;
    out->status = status;

    if (kind == UDP_TUNNEL_VXLAN) {
        /* RFC 7348: 8-byte header, I flag set; then an inner Ethernet frame */
        if (l4len < UDP_HLEN + VXLAN_HLEN || !(l4[UDP_HLEN] & VXLAN_FLAG_I))
            return R_DEFER;
        out->inner = l4 + UDP_HLEN + VXLAN_HLEN;
        out->inner_len = l4len - UDP_HLEN - VXLAN_HLEN;
    }
    return R_DONE;
}

/* The IPv4 header checksum, into the slot kept for it before its L4 row (wire order). It is
 * judged after the L4 checksum, whose status it needs. */
static void judge_ipv4_header(packet_ctx *c, int slot, int depth, const ip_info *ip, size_t ihl,
                              const l4_result *l4)
{
    const uint8_t *h = ip->ip;
    unsigned stored = be16(h + IPV4_CSUM_AT);
    uint32_t s = csum_without(h, ihl, IPV4_CSUM_AT);
    verdict *v = &c->v[slot];
    fill_row(c, v, ip, depth, LAYER_IPV4, h + IPV4_CSUM_AT);
    issue_row *r = &v->row;
    r->stored = stored;
    r->computed = ~s & 0xffffu;
    if (l4->has_ports) {
        r->sport = (uint16_t)l4->sport;
        r->dport = (uint16_t)l4->dport;
    }
    if (fold((uint64_t)s + stored) == 0xffff) {
        r->status = ST_OK;
    } else if (stored == 0 && l4->status == ST_PARTIAL) {
        r->status = ST_PARTIAL; /* the NIC fills in the header checksum too */
        r->flags = FL_HDR_OFFLOAD;
    } else {
        r->status = ST_BAD;
    }
}

static int ipv4_level(packet_ctx *c, int depth, const uint8_t *h, size_t cap, size_t orig,
                      l4_result *l4)
{
    if (cap < IPV4_MIN_HLEN || (h[0] >> 4) != 4)
        return R_DEFER;
    size_t ihl = (size_t)(h[0] & 0x0f) * 4;
    uint32_t total = be16(h + 2);
    if (ihl < IPV4_MIN_HLEN || ihl > cap || total == 0 || total < ihl || total > orig)
        return R_DEFER; /* total 0: TSO/Windows LSO; the decoder knows those */
    if (be16(h + 6) & 0x3fff)
        return R_DEFER; /* a fragment: reassembly is the decoder's */
    for (size_t i = IPV4_MIN_HLEN; i < ihl;) {
        unsigned opt = h[i];
        if (opt == IPOPT_END)
            break;
        if (opt == IPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 1 >= ihl)
            return R_DEFER;
        size_t len = h[i + 1];
        if (len < 2 || i + len > ihl)
            return R_DEFER;
        if (opt == IPOPT_LSRR || opt == IPOPT_SSRR)
            return R_DEFER; /* source route: the pseudo-header takes the final destination */
        i += len;
    }
    ip_info ip = {h, 4, h[9], total};
    if (ip.proto != IPPROTO_ICMP && ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP)
        return R_DEFER;
    uint32_t l4len = total - (uint32_t)ihl;
    size_t l4cap = (cap < total ? cap : total) - ihl;
    uint64_t pseudo = ip.proto == IPPROTO_ICMP ? 0 : (uint64_t)csum_be(h + 12, 8) + ip.proto + l4len;
    int slot = c->n++; /* the header row goes before its L4 row; a swap afterwards cost a store-forwarding stall per packet (perf) */
    if (judge_l4(c, depth, &ip, h + ihl, l4len, l4cap, pseudo, l4) != R_DONE)
        return R_DEFER;
    judge_ipv4_header(c, slot, depth, &ip, ihl, l4);
    return R_DONE;
}

static int ipv6_level(packet_ctx *c, int depth, const uint8_t *h, size_t cap, size_t orig,
                      l4_result *l4)
{
    if (cap < IPV6_HLEN || (h[0] >> 4) != 6)
        return R_DEFER;
    uint32_t plen = be16(h + 4);
    unsigned nh = h[6];
    /* plen 0: a jumbogram/BIG TCP; any extension header: the decoder's */
    if (plen == 0 || (nh != IPPROTO_TCP && nh != IPPROTO_UDP && nh != IPPROTO_ICMPV6) || IPV6_HLEN + (size_t)plen > orig)
        return R_DEFER;
    ip_info ip = {h, 6, nh, IPV6_HLEN + plen};
    size_t l4cap = min_sz(cap, IPV6_HLEN + (size_t)plen) - IPV6_HLEN;
    uint64_t pseudo = (uint64_t)csum_be(h + 8, 32) + nh + plen;
    return judge_l4(c, depth, &ip, h + IPV6_HLEN, plen, l4cap, pseudo, l4);
}

/* Local checksum offload (Documentation/networking/checksum-offloads.rst): a tunnel's outer UDP
 * sum is computed for the packet as it will leave, with the inner sum filled in. While that inner
 * sum is pending (row `inner`), an outer UDP sum that verifies once it is filled is pending too,
 * not bad. Filling the field adds computed - stored to every sum over it (RFC 1624); a field at an
 * odd distance from the outer one enters the sum byte-swapped. checksum/verify.py lco_verifies is
 * the reference. */
static void lco_outer(packet_ctx *c, int inner)
{
    const issue_row *in = &c->v[inner].row;
    if (in->stored == in->computed)
        return;
    for (int k = 0; k < c->n; k++) {
        issue_row *r = &c->v[k].row;
        if (r->layer != LAYER_UDP || r->status != ST_BAD || r->depth >= in->depth || r->offset > in->offset)
            continue;
        uint32_t stored = in->stored & 0xffffu, computed = in->computed & 0xffffu;
        if ((in->offset - r->offset) & 1u) {
            stored = ((stored & 0xffu) << 8) | (stored >> 8);
            computed = ((computed & 0xffu) << 8) | (computed >> 8);
        }
        uint32_t sum = (~r->computed & 0xffffu) + computed + (~stored & 0xffffu);
        while (sum >> 16)
            sum = (sum & 0xffffu) + (sum >> 16);
        uint32_t after = ~sum & 0xffffu;
        if (after == 0)
            after = 0xffffu; /* RFC 768: a computed zero is sent as all ones */
        if (after == (r->stored & 0xffffu)) {
            r->status = ST_PARTIAL;
            r->flags |= FL_KERNEL;
        }
    }
}

/* Kernel tp_status rules, then the GSO flag (verdicts.md). Returns kernel overrides. */
static int finish_packet(packet_ctx *c, uint32_t tp_status)
{
    int overrides = 0;
    if (tp_status != TP_STATUS_UNKNOWN) {
        if (tp_status & TP_STATUS_CSUMNOTREADY) {
            /* the innermost offloadable checksum still pending: bad or partial; rows go outer first */
            for (int k = c->n - 1; k >= 0; k--) {
                issue_row *r = &c->v[k].row;
                if ((r->layer == LAYER_TCP || r->layer == LAYER_UDP || r->layer == LAYER_ICMPV6) &&
                    (r->status == ST_BAD || r->status == ST_PARTIAL)) {
                    r->status = ST_PARTIAL;
                    r->flags |= FL_KERNEL;
                    lco_outer(c, k);
                    break;
                }
            }
        }
        if (tp_status & TP_STATUS_CSUM_VALID) {
            for (int k = 0; k < c->n; k++) {
                issue_row *r = &c->v[k].row;
                if ((r->layer == LAYER_TCP || r->layer == LAYER_UDP) &&
                    (r->status == ST_BAD || r->status == ST_PARTIAL)) {
                    r->status = ST_OK;
                    r->flags |= FL_KERNEL;
                    overrides++;
                }
            }
        }
    }
    for (int k = 0; k < c->n; k++) {
        issue_row *r = &c->v[k].row;
        if (r->layer != LAYER_IPV4 && r->status == ST_PARTIAL && c->v[k].ip_len > 1500)
            r->flags |= FL_GSO;
    }
    return overrides;
}

static int scan_packet(packet_ctx *c, unsigned linktype, const uint8_t *p, size_t cap, size_t orig)
{
    for (int depth = 0;; depth++) {
        size_t l3 = 0;
        int net = link_walk(linktype, p, cap, &l3, &SCAN_LINK);
        if (net == NET_DEFER)
            return R_DEFER;
        if (net == NET_NONE)
            return R_DONE;
        l4_result l4;
        int r = net == NET_IPV4 ? ipv4_level(c, depth, p + l3, cap - l3, orig - l3, &l4)
                                : ipv6_level(c, depth, p + l3, cap - l3, orig - l3, &l4);
        if (r != R_DONE)
            return R_DEFER;
        if (!l4.inner)
            return R_DONE;
        if (depth + 1 >= MAX_DEPTH)
            return R_DEFER;
        /* The inner frame lies inside a fully captured UDP datagram. */
        linktype = LINKTYPE_ETHERNET;
        p = l4.inner;
        cap = orig = l4.inner_len;
    }
}

static void write_row(uint8_t *dst, const issue_row *r)
{
    issue_row o = *r;
    o.frame = to_le64(o.frame);
    o.offset = to_le32(o.offset);
    o.stored = to_le32(o.stored);
    o.computed = to_le32(o.computed);
    o.extra = to_le32(o.extra);
    o.sport = to_le16(o.sport);
    o.dport = to_le16(o.dport);
    memcpy(dst, &o, sizeof o);
}

typedef struct {
    const uint8_t *buf;
    size_t buf_len;
    const int64_t *offset;
    const uint32_t *caplen, *origlen, *tp_status;
    const uint16_t *linktype;
    const uint8_t *port_kind;
    size_t n;
    uint64_t first_frame;
    int64_t *counts;
    uint8_t *issues;
    size_t issues_cap;
    uint32_t *deferred;
    int64_t *stats;
} scan_args;

/* The loop the GIL is released around. Returns the next index; *n_issues, *n_deferred set. */
static size_t scan_loop(const scan_args *a, size_t start, size_t *n_issues, size_t *n_deferred)
{
    size_t ni = 0, nd = 0, i;
    packet_ctx c;
    c.port_kind = a->port_kind;
    for (i = start; i < a->n; i++) {
        if (i + SCAN_AHEAD < a->n) {
            /* Every byte of a packet is summed, and the packets lie one after another: bring
             * the one SCAN_AHEAD packets on into cache while this one is judged. */
            int64_t ahead = a->offset[i + SCAN_AHEAD];
            size_t len = a->caplen[i + SCAN_AHEAD];
            if (ahead >= 0 && (uint64_t)ahead <= a->buf_len && len <= a->buf_len - (size_t)ahead)
                for (size_t k = 0; k < len; k += 64)
                    __builtin_prefetch(a->buf + ahead + k);
        }
        int64_t off = a->offset[i];
        size_t cap = a->caplen[i], orig = a->origlen[i];
        int r = R_DEFER;
        c.n = 0;
        if (off >= 0 && (uint64_t)off <= a->buf_len && cap <= a->buf_len - (size_t)off &&
            cap <= orig) {
            c.pkt = a->buf + off;
            c.frame = a->first_frame + i;
            r = scan_packet(&c, a->linktype[i], c.pkt, cap, orig);
        }
        if (r == R_DEFER) {
            a->deferred[nd++] = (uint32_t)i;
            a->stats[2]++;
            continue;
        }
        int overrides = finish_packet(&c, a->tp_status[i]);
        size_t rows = 0;
        for (int k = 0; k < c.n; k++)
            rows += c.v[k].row.status != ST_OK;
        if (rows > a->issues_cap - ni)
            break; /* the caller grows `issues` and resumes here; nothing of i is written */
        for (int k = 0; k < c.n; k++) {
            const issue_row *row = &c.v[k].row;
            a->counts[(row->depth * N_LAYERS + row->layer) * N_STATUS + row->status]++;
            if (row->status != ST_OK)
                write_row(a->issues + sizeof(issue_row) * ni++, row);
        }
        a->stats[0]++;
        a->stats[1] += (int64_t)cap;
        a->stats[3] += overrides;
    }
    *n_issues = ni;
    *n_deferred = nd;
    return i;
}

/* ---- the entry point ---- */

enum { S_BUF, S_OFFSET, S_CAPLEN, S_ORIGLEN, S_LINKTYPE, S_TP_STATUS, S_FIRST, S_START, S_PORTS, S_COUNTS,
       S_ISSUES, S_DEFERRED, S_STATS, S_NARGS };

static const arg_spec scan_args_spec[S_NARGS] = {
    [S_BUF] = {"buf", ARG_BYTES},
    [S_OFFSET] = {"offset", ARG_INTS, 8, ARG_SIGNED | ARG_PER_PACKET},
    [S_CAPLEN] = {"caplen", ARG_INTS, 4, ARG_PER_PACKET},
    [S_ORIGLEN] = {"origlen", ARG_INTS, 4, ARG_PER_PACKET},
    [S_LINKTYPE] = {"linktype", ARG_INTS, 2, ARG_PER_PACKET},
    [S_TP_STATUS] = {"tp_status", ARG_INTS, 4, ARG_PER_PACKET},
    [S_FIRST] = {"first_frame", ARG_U64},
    [S_START] = {"start", ARG_SSIZE},
    [S_PORTS] = {"port_kind", ARG_INTS, 1, 0, 65536},
    [S_COUNTS] = {"counts", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE, MAX_DEPTH * N_LAYERS * N_STATUS},
    [S_ISSUES] = {"issues", ARG_ROWS, sizeof(issue_row), ARG_WRITABLE, 0, "ISSUE_DTYPE"},
    [S_DEFERRED] = {"deferred", ARG_INTS, 4, ARG_WRITABLE},
    [S_STATS] = {"stats", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE, 8},
};

PyObject *fastscan_scan(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "scan", scan_args_spec, S_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = c.packets, start = v[S_START].n;
    if (start < 0 || start > n) {
        PyErr_Format(PyExc_ValueError, "start %zd out of range [0, %zd]", start, n);
        goto done;
    }
    if (v[S_DEFERRED].items < n - start) {
        PyErr_Format(PyExc_ValueError, "deferred needs room for %zd indices, has %zd", n - start, v[S_DEFERRED].items);
        goto done;
    }
    scan_args a = {
        .buf = v[S_BUF].view->buf,
        .buf_len = (size_t)v[S_BUF].view->len,
        .offset = v[S_OFFSET].view->buf,
        .caplen = v[S_CAPLEN].view->buf,
        .origlen = v[S_ORIGLEN].view->buf,
        .linktype = v[S_LINKTYPE].view->buf,
        .tp_status = v[S_TP_STATUS].view->buf,
        .port_kind = v[S_PORTS].view->buf,
        .n = (size_t)n,
        .first_frame = v[S_FIRST].u,
        .counts = v[S_COUNTS].view->buf,
        .issues = v[S_ISSUES].view->buf,
        .issues_cap = (size_t)v[S_ISSUES].items,
        .deferred = v[S_DEFERRED].view->buf,
        .stats = v[S_STATS].view->buf,
    };
    size_t next, n_issues, n_deferred;
    Py_BEGIN_ALLOW_THREADS
    next = scan_loop(&a, (size_t)start, &n_issues, &n_deferred);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nnn)", (Py_ssize_t)next, (Py_ssize_t)n_issues, (Py_ssize_t)n_deferred);
done:
    release_args(&c);
    return result;
}

const char scan_doc[] =
    "scan(buf, offset, caplen, origlen, linktype, tp_status, first_frame, start,\n"
    "     port_kind, counts, issues, deferred, stats) -> (next_index, n_issues, n_deferred)\n"
    "\n"
    "Judge the checksums of packets start.. of a batch. Rows go to the beginning of `issues`\n"
    "(ISSUE_DTYPE) and `deferred` (uint32 batch indices); `counts` (int64[8][9][7]) and `stats`\n"
    "(int64[8]) accumulate. Stops early, before packet next_index, when `issues` lacks room for\n"
    "that packet's rows; nothing of that packet has been counted then.";
