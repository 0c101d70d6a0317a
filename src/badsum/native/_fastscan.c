/*
 * badsum.native._fastscan: the measured hot path. Judges every checksum the common packets carry
 * (IPv4 header, TCP, UDP, ICMP, ICMPv6; Ethernet/VLAN, SLL, SLL2, raw IP, NULL/LOOP; VXLAN inner
 * frames) exactly as docs/verdicts.md says, and defers every other packet, whole, to the Python
 * decoder. The integer codes and the issue row layout mirror badsum/checksum/verdict.py.
 * `facts` extracts the packet facts of badsum/flows/facts.py (FACTS_DTYPE) for the same packets,
 * headers only, and defers the rest to fact_of_frame.
 *
 * Input is hostile: every read is bounded by the record's caplen and the buffer; tunnel nesting is
 * a bounded loop, not recursion; nothing is allocated while the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- the contract with badsum/checksum/verdict.py (must not drift) ---- */

enum { MAX_DEPTH = 8, N_LAYERS = 9, N_STATUS = 7 };

enum { LAYER_IPV4 = 0, LAYER_TCP = 1, LAYER_UDP = 2, LAYER_ICMP = 4, LAYER_ICMPV6 = 5 };

enum {
    ST_OK = 0,
    ST_BAD = 1,
    ST_PARTIAL = 2,
    ST_ZERO_ALLOWED = 3,
    ST_ZERO_INVALID = 4,
    ST_UNVERIFIABLE = 5,
};

enum {
    FL_GSO = 0x01,
    FL_KERNEL = 0x02,
    FL_TUNNEL_ZERO = 0x08,
    FL_HDR_OFFLOAD = 0x20,
    FL_TRUNCATED = 0x40,
};

#define TP_STATUS_CSUMNOTREADY 0x8u
#define TP_STATUS_CSUM_VALID 0x80u
#define TP_STATUS_UNKNOWN 0xFFFFFFFFu

/* port_kind table values (badsum/scan/fast.py) */
enum { PORT_NONE = 0, PORT_VXLAN = 1 };

/* ISSUE_DTYPE: 72 bytes, little-endian fields, no implicit padding. */
typedef struct issue_row {
    uint64_t frame;
    uint32_t offset;
    uint32_t stored;
    uint32_t computed;
    uint32_t extra;
    uint8_t layer;
    uint8_t depth;
    uint8_t status;
    uint8_t flags;
    uint8_t ipver;
    uint8_t proto;
    uint16_t sport;
    uint16_t dport;
    uint8_t pad[6];
    uint8_t src[16];
    uint8_t dst[16];
} issue_row;

_Static_assert(sizeof(issue_row) == 72, "ISSUE_DTYPE is 72 bytes");
_Static_assert(offsetof(issue_row, frame) == 0, "frame");
_Static_assert(offsetof(issue_row, offset) == 8, "offset");
_Static_assert(offsetof(issue_row, stored) == 12, "stored");
_Static_assert(offsetof(issue_row, computed) == 16, "computed");
_Static_assert(offsetof(issue_row, extra) == 20, "extra");
_Static_assert(offsetof(issue_row, layer) == 24, "layer");
_Static_assert(offsetof(issue_row, depth) == 25, "depth");
_Static_assert(offsetof(issue_row, status) == 26, "status");
_Static_assert(offsetof(issue_row, flags) == 27, "flags");
_Static_assert(offsetof(issue_row, ipver) == 28, "ipver");
_Static_assert(offsetof(issue_row, proto) == 29, "proto");
_Static_assert(offsetof(issue_row, sport) == 30, "sport");
_Static_assert(offsetof(issue_row, dport) == 32, "dport");
_Static_assert(offsetof(issue_row, pad) == 34, "_pad");
_Static_assert(offsetof(issue_row, src) == 40, "src");
_Static_assert(offsetof(issue_row, dst) == 56, "dst");

/* A packet yields at most an IPv4 header and an L4 checksum per tunnel level. */
#define ROWS_MAX (2 * MAX_DEPTH)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

/* ---- byte access ---- */

static inline unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* ---- RFC 1071 arithmetic ---- */

/* End-around-carry fold to 16 bits; 0 only when s is 0. */
static inline uint32_t fold(uint64_t s)
{
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint32_t)s;
}

/*
 * Folded one's complement sum of the big-endian 16-bit words of p[0..n) (odd tail padded with a
 * zero low byte); 0 only when every byte is 0. Native 32-bit loads summed into a 64-bit
 * accumulator; on a little-endian host the words come out byte-swapped and one swap of the folded
 * result corrects that (RFC 1071 section 2(B)). Four accumulators keep the adds independent.
 */
static inline uint32_t csum_be(const uint8_t *p, size_t n)
{
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    while (n >= 16) {
        uint32_t w[4];
        memcpy(w, p, 16);
        a0 += w[0];
        a1 += w[1];
        a2 += w[2];
        a3 += w[3];
        p += 16;
        n -= 16;
    }
    while (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        a0 += w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        a1 += h;
        p += 2;
        n -= 2;
    }
    if (n)
        a2 += HOST_BIG_ENDIAN ? (uint32_t)p[0] << 8 : p[0];
    uint32_t f = fold(fold(a0) + (uint64_t)fold(a1) + fold(a2) + fold(a3));
#if !HOST_BIG_ENDIAN
    f = ((f & 0xffu) << 8) | (f >> 8);
#endif
    return f;
}

/* Sum of n bytes at p, the 16-bit field at p+field counted as zero (field is even). */
static inline uint32_t csum_without(const uint8_t *p, size_t n, size_t field)
{
    return fold((uint64_t)csum_be(p, field) + csum_be(p + field + 2, n - field - 2));
}

/* ---- little-endian stores into the issue rows ---- */

static inline uint16_t to_le16(uint16_t v)
{
#if HOST_BIG_ENDIAN
    return (uint16_t)((v >> 8) | (v << 8));
#else
    return v;
#endif
}

static inline uint32_t to_le32(uint32_t v)
{
#if HOST_BIG_ENDIAN
    return __builtin_bswap32(v);
#else
    return v;
#endif
}

static inline uint64_t to_le64(uint64_t v)
{
#if HOST_BIG_ENDIAN
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

/* ---- one packet ---- */

enum { R_DONE = 0, R_DEFER = 1 };
enum { NET_NONE, NET_IPV4, NET_IPV6, NET_DEFER };

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

/* Ethertype chain after a link header: VLAN tags (up to 4; a fifth is the decoder's), then IPv4/IPv6
 * or nothing. */
static int walk_ethertype(unsigned et, const uint8_t *p, size_t cap, size_t off, size_t *l3)
{
    for (int tags = 0;; tags++) {
        switch (et) {
        case 0x0800:
            *l3 = off;
            return NET_IPV4;
        case 0x86dd:
            *l3 = off;
            return NET_IPV6;
        case 0x8100:
        case 0x88a8:
        case 0x9100:
        case 0x9200:
            if (tags == 4 || cap - off < 4)
                return NET_DEFER;
            et = be16(p + off + 2);
            off += 4;
            break;
        /* These may carry IP the decoder judges: MPLS, PPPoE session, PBB, NSH. */
        case 0x8847:
        case 0x8848:
        case 0x8864:
        case 0x88e7:
        case 0x894f:
            return NET_DEFER;
        default:
            /* An 802.3 length (LLC, maybe SNAP-encapsulated IP) is left to the decoder. */
            return et < 0x0600 ? NET_DEFER : NET_NONE;
        }
    }
}

static int link_layer(unsigned linktype, const uint8_t *p, size_t cap, size_t *l3)
{
    switch (linktype) {
    case 1: /* Ethernet */
        if (cap < 14)
            return NET_DEFER;
        return walk_ethertype(be16(p + 12), p, cap, 14, l3);
    case 113: /* Linux SLL: protocol at 14; libpcap re-inserts a stripped VLAN tag there */
        if (cap < 16)
            return NET_DEFER;
        return walk_ethertype(be16(p + 14), p, cap, 16, l3);
    case 276: /* Linux SLL2: protocol at 0 */
        if (cap < 20)
            return NET_DEFER;
        return walk_ethertype(be16(p), p, cap, 20, l3);
    case 101:
    case 12:
    case 14: /* raw IP: the version nibble decides */
        if (cap < 1)
            return NET_DEFER;
        *l3 = 0;
        switch (p[0] >> 4) {
        case 4:
            return NET_IPV4;
        case 6:
            return NET_IPV6;
        default:
            return NET_DEFER;
        }
    case 228:
        *l3 = 0;
        return NET_IPV4;
    case 229:
        *l3 = 0;
        return NET_IPV6;
    case 0:
    case 108: { /* NULL (host order) and LOOP (network order): accept either */
        if (cap < 4)
            return NET_DEFER;
        uint32_t a = le32(p), b = be32(p);
        *l3 = 4;
        if (a == 2 || b == 2)
            return NET_IPV4;
        /* AF_INET6 on NetBSD/OpenBSD, FreeBSD, Darwin */
        if (a == 24 || a == 28 || a == 30 || b == 24 || b == 28 || b == 30)
            return NET_IPV6;
        return NET_NONE;
    }
    default:
        return NET_DEFER;
    }
}

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
    unsigned layer, kind = PORT_NONE;
    switch (ip->proto) {
    case 6:
        if (l4len < 20)
            return R_DEFER;
        if (l4cap >= 13) {
            unsigned doff = (unsigned)(l4[12] >> 4) * 4;
            if (doff < 20 || doff > l4len)
                return R_DEFER;
        }
        field = 16;
        layer = LAYER_TCP;
        break;
    case 17:
        if (l4len < 8)
            return R_DEFER;
        field = 6;
        layer = LAYER_UDP;
        if (l4cap >= 4) {
            kind = c->port_kind[be16(l4 + 2)];
            if (kind > PORT_VXLAN) /* Geneve, GRE-in-UDP, MPLS-in-UDP: the decoder's */
                return R_DEFER;
        }
        /* tshark takes the L4 length from IP; a UDP length that disagrees is the decoder's */
        if (l4cap >= 8 && be16(l4 + 4) != l4len)
            return R_DEFER;
        break;
    case 1:
    case 58:
        if (l4len < 8)
            return R_DEFER;
        field = 2;
        layer = ip->proto == 1 ? LAYER_ICMP : LAYER_ICMPV6;
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
        if (kind == PORT_VXLAN)
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
        } else if (kind != PORT_NONE) {
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

    if (kind == PORT_VXLAN) {
        /* RFC 7348: 8-byte header, I flag (0x08) set; then an inner Ethernet frame */
        if (l4len < 16 || !(l4[8] & 0x08))
            return R_DEFER;
        out->inner = l4 + 16;
        out->inner_len = l4len - 16;
    }
    return R_DONE;
}

/* The IPv4 header checksum, pushed before its L4 row: wire order. */
static void judge_ipv4_header(packet_ctx *c, int depth, const ip_info *ip, size_t ihl,
                              const l4_result *l4)
{
    const uint8_t *h = ip->ip;
    unsigned stored = be16(h + 10);
    uint32_t s = csum_without(h, ihl, 10);
    verdict *v = &c->v[c->n++];
    fill_row(c, v, ip, depth, LAYER_IPV4, h + 10);
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

/* Swap the L4 row (pushed first, since the header verdict needs it) behind its header row. */
static void header_first(packet_ctx *c)
{
    verdict t = c->v[c->n - 2];
    c->v[c->n - 2] = c->v[c->n - 1];
    c->v[c->n - 1] = t;
}

static int ipv4_level(packet_ctx *c, int depth, const uint8_t *h, size_t cap, size_t orig,
                      l4_result *l4)
{
    if (cap < 20 || (h[0] >> 4) != 4)
        return R_DEFER;
    size_t ihl = (size_t)(h[0] & 0x0f) * 4;
    uint32_t total = be16(h + 2);
    if (ihl < 20 || ihl > cap || total == 0 || total < ihl || total > orig)
        return R_DEFER; /* total 0: TSO/Windows LSO; the decoder knows those */
    if (be16(h + 6) & 0x3fff)
        return R_DEFER; /* a fragment: reassembly is the decoder's */
    for (size_t i = 20; i < ihl;) {
        unsigned opt = h[i];
        if (opt == 0)
            break;
        if (opt == 1) {
            i++;
            continue;
        }
        if (i + 1 >= ihl)
            return R_DEFER;
        size_t len = h[i + 1];
        if (len < 2 || i + len > ihl)
            return R_DEFER;
        if (opt == 131 || opt == 137)
            return R_DEFER; /* source route: the pseudo-header takes the final destination */
        i += len;
    }
    ip_info ip = {h, 4, h[9], total};
    if (ip.proto != 1 && ip.proto != 6 && ip.proto != 17)
        return R_DEFER;
    uint32_t l4len = total - (uint32_t)ihl;
    size_t l4cap = (cap < total ? cap : total) - ihl;
    uint64_t pseudo = ip.proto == 1 ? 0 : (uint64_t)csum_be(h + 12, 8) + ip.proto + l4len;
    if (judge_l4(c, depth, &ip, h + ihl, l4len, l4cap, pseudo, l4) != R_DONE)
        return R_DEFER;
    judge_ipv4_header(c, depth, &ip, ihl, l4);
    header_first(c);
    return R_DONE;
}

static int ipv6_level(packet_ctx *c, int depth, const uint8_t *h, size_t cap, size_t orig,
                      l4_result *l4)
{
    if (cap < 40 || (h[0] >> 4) != 6)
        return R_DEFER;
    uint32_t plen = be16(h + 4);
    unsigned nh = h[6];
    /* plen 0: a jumbogram/BIG TCP; any extension header: the decoder's */
    if (plen == 0 || (nh != 6 && nh != 17 && nh != 58) || 40 + (size_t)plen > orig)
        return R_DEFER;
    ip_info ip = {h, 6, nh, 40 + plen};
    size_t l4cap = (cap < 40 + (size_t)plen ? cap : 40 + (size_t)plen) - 40;
    uint64_t pseudo = (uint64_t)csum_be(h + 8, 32) + nh + plen;
    return judge_l4(c, depth, &ip, h + 40, plen, l4cap, pseudo, l4);
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
        int net = link_layer(linktype, p, cap, &l3);
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
        linktype = 1;
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

/* ---- packet facts (badsum/flows/facts.py): the contract with FACTS_DTYPE ---- */

/*
 * One fact per packet, field for field what `fact_of_frame(decode_frame(...))` gives (the spec is
 * that function and its docstrings). Only headers are read, never payloads. Whatever the decoder
 * does that is not written out here (GRE, Geneve, IPIP, MPLS, UDP-Lite, PPP, unknown link types,
 * deep nesting) is deferred, whole, to it.
 */
typedef struct fact_row {
    uint64_t frame;
    int64_t ts_ns;
    uint32_t seq;
    uint32_t ack;
    uint32_t payload;
    uint32_t ip_len;
    uint32_t outer_len;
    uint32_t icmp_mtu;
    uint32_t q_seq;
    uint16_t sport;
    uint16_t dport;
    uint16_t ipid;
    uint16_t q_sport;
    uint16_t q_dport;
    uint16_t q_ipid;
    uint16_t q_len;
    uint16_t win;
    uint8_t valid;
    uint8_t ipver;
    uint8_t proto;
    uint8_t depth;
    uint8_t tcp_flags;
    uint8_t ip_flags;
    uint8_t icmp_type;
    uint8_t icmp_code;
    uint8_t q_proto;
    uint8_t q_flags;
    uint8_t pad[2];
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t q_src[16];
    uint8_t q_dst[16];
} fact_row;

_Static_assert(sizeof(fact_row) == 136, "FACTS_DTYPE is 136 bytes");
_Static_assert(offsetof(fact_row, frame) == 0, "frame");
_Static_assert(offsetof(fact_row, ts_ns) == 8, "ts_ns");
_Static_assert(offsetof(fact_row, seq) == 16, "seq");
_Static_assert(offsetof(fact_row, ack) == 20, "ack");
_Static_assert(offsetof(fact_row, payload) == 24, "payload");
_Static_assert(offsetof(fact_row, ip_len) == 28, "ip_len");
_Static_assert(offsetof(fact_row, outer_len) == 32, "outer_len");
_Static_assert(offsetof(fact_row, icmp_mtu) == 36, "icmp_mtu");
_Static_assert(offsetof(fact_row, q_seq) == 40, "q_seq");
_Static_assert(offsetof(fact_row, sport) == 44, "sport");
_Static_assert(offsetof(fact_row, dport) == 46, "dport");
_Static_assert(offsetof(fact_row, ipid) == 48, "ipid");
_Static_assert(offsetof(fact_row, q_sport) == 50, "q_sport");
_Static_assert(offsetof(fact_row, q_dport) == 52, "q_dport");
_Static_assert(offsetof(fact_row, q_ipid) == 54, "q_ipid");
_Static_assert(offsetof(fact_row, q_len) == 56, "q_len");
_Static_assert(offsetof(fact_row, win) == 58, "win");
_Static_assert(offsetof(fact_row, valid) == 60, "valid");
_Static_assert(offsetof(fact_row, ipver) == 61, "ipver");
_Static_assert(offsetof(fact_row, proto) == 62, "proto");
_Static_assert(offsetof(fact_row, depth) == 63, "depth");
_Static_assert(offsetof(fact_row, tcp_flags) == 64, "tcp_flags");
_Static_assert(offsetof(fact_row, ip_flags) == 65, "ip_flags");
_Static_assert(offsetof(fact_row, icmp_type) == 66, "icmp_type");
_Static_assert(offsetof(fact_row, icmp_code) == 67, "icmp_code");
_Static_assert(offsetof(fact_row, q_proto) == 68, "q_proto");
_Static_assert(offsetof(fact_row, q_flags) == 69, "q_flags");
_Static_assert(offsetof(fact_row, pad) == 70, "_pad");
_Static_assert(offsetof(fact_row, src) == 72, "src");
_Static_assert(offsetof(fact_row, dst) == 88, "dst");
_Static_assert(offsetof(fact_row, q_src) == 104, "q_src");
_Static_assert(offsetof(fact_row, q_dst) == 120, "q_dst");

/* IPF_* and QF_* of facts.py */
enum { IPF_DF = 0x01, IPF_FRAGMENT = 0x02, IPF_OUTER_DF = 0x04, IPF_UDP_TUNNEL = 0x08, IPF_LATER_FRAGMENT = 0x10 };
enum { QF_DF = 0x01 };

/* badsum.wire.frame.MAX_DEPTH is 8; a quote sits one deeper than its ICMP error, so stop at 7. */
enum { FACT_MAX_DEPTH = 7, IPV6_MAX_EXT = 16, MAX_VLAN_TAGS = 8, FACT_PREFETCH = 16 };

/* What one IP level hands to the next (VXLAN) level. */
typedef struct {
    int inner; /* a VXLAN header was read: the inner Ethernet frame starts at inner_pos */
    size_t inner_pos;
    size_t limit; /* the decoder's `end` for the inner frame (may pass the capture) */
} fact_next;

static inline size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* Bytes of [pos, end) inside the capture of cap bytes. */
static inline size_t avail(size_t pos, size_t end, size_t cap)
{
    size_t b = min_sz(end, cap);
    return b > pos ? b - pos : 0;
}

/* ethernet()/_vlan_tags() of badsum.wire.link from `off`, where `et` was read: up to 8 tags; a
 * tag cut by `bound` ends the frame (link.truncated). MPLS and Cisco MetaData are the decoder's. */
static int fact_ethertype(unsigned et, const uint8_t *p, size_t bound, size_t off, size_t *l3)
{
    for (int tags = 0; tags < MAX_VLAN_TAGS && (et == 0x8100 || et == 0x88a8 || et == 0x9100 || et == 0x9200);
         tags++) {
        if (bound < off + 4)
            return NET_NONE;
        et = be16(p + off + 2);
        off += 4;
    }
    *l3 = off;
    switch (et) {
    case 0x0800:
        return NET_IPV4;
    case 0x86dd:
        return NET_IPV6;
    case 0x8847:
    case 0x8848:
    case 0x8909:
        return NET_DEFER;
    default:
        return NET_NONE; /* also an 802.3 length: the decoder makes it ethertype 0 */
    }
}

/* decode_link(): a header cut short is link.truncated, no packet. */
static int fact_link(unsigned linktype, const uint8_t *p, size_t cap, size_t *l3)
{
    switch (linktype) {
    case 1:
        if (cap < 14)
            return NET_NONE;
        return fact_ethertype(be16(p + 12), p, cap, 14, l3);
    case 113:
        if (cap < 16)
            return NET_NONE;
        return fact_ethertype(be16(p + 14), p, cap, 16, l3);
    case 276:
        if (cap < 20)
            return NET_NONE;
        return fact_ethertype(be16(p), p, cap, 20, l3);
    case 101:
    case 12:
    case 14:
        if (cap < 1)
            return NET_NONE;
        *l3 = 0;
        return (p[0] >> 4) == 4 ? NET_IPV4 : (p[0] >> 4) == 6 ? NET_IPV6 : NET_NONE;
    case 228:
        *l3 = 0;
        return NET_IPV4;
    case 229:
        *l3 = 0;
        return NET_IPV6;
    case 0:
    case 108: {
        if (cap < 4)
            return NET_NONE;
        uint32_t a = le32(p), b = be32(p);
        uint32_t fam = a < b ? a : b;
        *l3 = 4;
        return fam == 2 ? NET_IPV4 : (fam == 24 || fam == 28 || fam == 30) ? NET_IPV6 : NET_NONE;
    }
    default:
        return NET_DEFER; /* PPP and link types the decoder may learn */
    }
}

static inline int ipv6_ext(unsigned nh)
{
    switch (nh) {
    case 0: case 43: case 44: case 51: case 60: case 135: case 139: case 140: case 253: case 254:
        return 1;
    default:
        return 0;
    }
}

/* What badsum.wire.ipv6.decode() finds after the fixed header. */
typedef struct {
    unsigned proto;
    size_t upper;
    int frag; /* a Fragment header was met */
    unsigned frag_off;
    int frag_more;
    int jumbo; /* a Jumbo Payload option was met */
    uint32_t jumbo_len;
} ipv6_walk;

static void walk_ipv6(const uint8_t *p, size_t cap, size_t pos, ipv6_walk *w)
{
    unsigned nh = p[pos + 6];
    size_t c = pos + 40;
    memset(w, 0, sizeof *w);
    for (int n = 0; ipv6_ext(nh) && n < IPV6_MAX_EXT; n++) {
        if (nh == 44) {
            if (cap < c + 8)
                goto truncated;
            unsigned fo = be16(p + c + 2);
            w->frag = 1;
            w->frag_off = fo & 0xfff8;
            w->frag_more = fo & 1;
            nh = p[c];
            c += 8;
            if (w->frag_off)
                break; /* a later fragment: the rest is payload */
            continue;
        }
        if (cap < c + 2)
            goto truncated;
        unsigned nxt = p[c], hl = p[c + 1];
        size_t size = nh == 51 ? ((size_t)hl + 2) * 4 : ((size_t)hl + 1) * 8;
        if (cap < c + size)
            goto truncated;
        if (nh == 0 || nh == 60) {
            /* TLV options: the last Jumbo Payload (RFC 2675) wins, as in ipv6._options */
            const uint8_t *body = p + c + 2;
            size_t len = size - 2;
            for (size_t i = 0; i < len;) {
                if (body[i] == 0) {
                    i++;
                    continue;
                }
                if (i + 1 >= len)
                    break;
                size_t ln = body[i + 1];
                if (i + 2 + ln > len)
                    break;
                if (body[i] == 0xc2 && ln == 4) {
                    w->jumbo = 1;
                    w->jumbo_len = be32(body + i + 2);
                }
                i += 2 + ln;
            }
        }
        c += size;
        nh = nxt;
    }
    w->proto = nh;
    w->upper = c;
    return;
truncated:
    w->proto = 59; /* ipv6.ext_header_truncated: no upper layer */
    w->upper = c;
}

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
        if (cap < qpos + 20 || (p[qpos] >> 4) != 4 || (p[qpos] & 0x0f) < 5)
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
        if (cap < qpos + 40 || (p[qpos] >> 4) != 6)
            return;
        const uint8_t *h = p + qpos;
        unsigned plen = be16(h + 4);
        ipv6_walk w;
        walk_ipv6(p, cap, qpos, &w);
        if (plen)
            qend = qpos + 40 + plen;
        else if (w.jumbo)
            qend = qpos + 40 + (size_t)w.jumbo_len;
        else
            qend = cap;
        l4 = w.upper;
        proto = w.proto;
        memcpy(f->q_src, h + 8, 16);
        memcpy(f->q_dst, h + 24, 16);
        f->q_len = (uint16_t)(40 + plen > 0xffff ? 0xffff : 40 + plen);
        f->q_flags = QF_DF;
        l4_decoded = !w.frag || w.frag_off == 0;
    }
    f->q_proto = (uint8_t)proto;
    if (!l4_decoded || !(proto == 6 || proto == 17 || proto == 132 || proto == 136))
        return;
    size_t n = avail(l4, qend, cap);
    if (n >= 4) { /* RFC 792: the first 64 bits of the datagram hold the ports */
        f->q_sport = (uint16_t)be16(p + l4);
        f->q_dport = (uint16_t)be16(p + l4 + 2);
    }
    if (proto == 6 && n >= 8)
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
    case 6:
        if (n < 18) /* tcp.decode reads through the checksum */
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
    case 17: {
        if (n < 8)
            return R_DONE;
        f->sport = (uint16_t)be16(b);
        f->dport = (uint16_t)be16(b + 2);
        size_t ulen = be16(b + 4);
        if (ulen == 0)
            ulen = l4len; /* RFC 2675 jumbo UDP */
        f->payload = (uint32_t)(ulen > 8 ? ulen - 8 : 0);
        if (fragment)
            return R_DONE; /* tunnels are followed in whole datagrams only */
        unsigned kind = port_kind[f->dport];
        if (kind == PORT_NONE)
            return R_DONE;
        if (kind != PORT_VXLAN)
            return R_DEFER;
        /* RFC 7348: an 8-byte header (the decoder does not insist on the I flag), then Ethernet */
        if (n < 16)
            return R_DONE;
        if (depth + 1 >= FACT_MAX_DEPTH)
            return R_DEFER;
        next->inner = 1;
        next->inner_pos = l4 + 16;
        next->limit = end;
        return R_DONE;
    }
    case 1:
    case 58: {
        if ((f->proto == 58) != v6 || n < 4)
            return R_DONE; /* ICMP in IPv6 or ICMPv6 in IPv4: not decoded */
        f->icmp_type = b[0];
        f->icmp_code = b[1];
        uint32_t rest = n >= 8 ? be32(b + 4) : 0;
        if (v6 ? b[0] == 2 : (b[0] == 3 && b[1] == 4))
            f->icmp_mtu = v6 ? rest : (rest & 0xffff);
        f->payload = (uint32_t)(l4len > 8 ? l4len - 8 : 0);
        size_t q = l4 + (n >= 8 ? 8 : 4);
        if (icmp_error(v6, b[0]) && n > q - l4)
            fact_quote(f, p, cap, q, v6);
        return R_DONE;
    }
    case 4:
    case 41:
    case 47:
    case 136:
        return R_DEFER; /* IPIP, 6in4, GRE, UDP-Lite: the decoder's */
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
        if (cap < pos + 20 || (p[pos] >> 4) != 4 || (p[pos] & 0x0f) < 5)
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
        if (cap < pos + 40 || (p[pos] >> 4) != 6)
            return R_DONE;
        const uint8_t *h = p + pos;
        size_t plen = be16(h + 4);
        ipv6_walk w;
        walk_ipv6(p, cap, pos, &w);
        if (plen)
            end = pos + 40 + plen;
        else if (w.jumbo)
            end = pos + 40 + (size_t)w.jumbo_len;
        else
            end = limit; /* BIG TCP/GSO as captured */
        l4 = w.upper;
        f->ipver = 6;
        f->proto = (uint8_t)w.proto;
        memcpy(f->src, h + 8, 16);
        memcpy(f->dst, h + 24, 16);
        if (w.jumbo) {
            uint64_t len = 40 + (uint64_t)w.jumbo_len;
            f->ip_len = len > 0xffffffffu ? 0xffffffffu : (uint32_t)len;
        } else {
            f->ip_len = (uint32_t)(plen ? 40 + plen : wire > pos ? wire - pos : 0);
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
    int net = fact_link(linktype, p, cap, &l3);
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
        if (bound < pos + 14)
            break;
        net = fact_ethertype(be16(p + pos + 12), p, bound, pos + 14, &l3);
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

/* ---- argument checking ---- */

/* Does a struct-module format describe a native-order integer of this size and signedness? */
static int int_format_ok(const char *fmt, int is_signed)
{
    if (fmt == NULL)
        return !is_signed; /* unformatted: bytes; the caller checks itemsize */
    if (*fmt == '@' || *fmt == '=' || *fmt == (HOST_BIG_ENDIAN ? '>' : '<') ||
        (HOST_BIG_ENDIAN && *fmt == '!'))
        fmt++;
    if (fmt[0] == '\0' || fmt[1] != '\0')
        return 0;
    const char *codes = is_signed ? "bhilq" : "BHILQ";
    if (strchr(codes, fmt[0]) == NULL)
        return 0;
    return 1;
}

typedef struct {
    Py_buffer views[13];
    int n;
} held_views;

static void release_views(held_views *h)
{
    while (h->n > 0)
        PyBuffer_Release(&h->views[--h->n]);
}

/*
 * Take a C-contiguous buffer of `itemsize`-byte integers (is_signed: -1 for "any layout", the
 * issues rows). Raises TypeError naming the argument.
 */
static Py_buffer *get_view(held_views *h, PyObject *obj, const char *name, Py_ssize_t itemsize,
                           int is_signed, int writable)
{
    Py_buffer *v = &h->views[h->n];
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0) | (is_signed >= 0 ? PyBUF_FORMAT : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %sC-contiguous buffer (got %.100s)", name,
                     writable ? "writable " : "", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    h->n++;
    if (is_signed >= 0 && (v->itemsize != itemsize || !int_format_ok(v->format, is_signed))) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s%d-bit integers (got format '%s', itemsize %zd)",
                     name, is_signed ? "signed " : "unsigned ", (int)(itemsize * 8),
                     v->format ? v->format : "B", v->itemsize);
        return NULL;
    }
    return v;
}

/* What scan and facts share: the batch's buffer and per-packet arrays (with `extra`, the one that
 * differs: tp_status for scan, ts_ns for facts), first_frame and the port-kind table. */
typedef struct {
    Py_buffer *buf, *offset, *caplen, *origlen, *linktype, *extra, *ports;
    Py_ssize_t n;
    unsigned long long first_frame;
} batch_in;

/* Parse and check them into `b`, the views held in `h`: 0, or -1 with an exception set. */
static int get_batch(held_views *h, PyObject *o_buf, PyObject *o_offset, PyObject *o_caplen,
                     PyObject *o_origlen, PyObject *o_linktype, PyObject *o_extra,
                     const char *extra_name, Py_ssize_t extra_size, int extra_signed,
                     PyObject *o_first, PyObject *o_ports, batch_in *b)
{
    b->first_frame = PyLong_AsUnsignedLongLong(o_first);
    if (b->first_frame == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_SetString(PyExc_TypeError, "first_frame must be a non-negative int");
        return -1;
    }
    if (PyObject_GetBuffer(o_buf, &h->views[h->n], PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "buf must be a contiguous bytes-like object (got %.100s)",
                     Py_TYPE(o_buf)->tp_name);
        return -1;
    }
    b->buf = &h->views[h->n++];
    if (!(b->offset = get_view(h, o_offset, "offset", 8, 1, 0)) ||
        !(b->caplen = get_view(h, o_caplen, "caplen", 4, 0, 0)) ||
        !(b->origlen = get_view(h, o_origlen, "origlen", 4, 0, 0)) ||
        !(b->linktype = get_view(h, o_linktype, "linktype", 2, 0, 0)) ||
        !(b->extra = get_view(h, o_extra, extra_name, extra_size, extra_signed, 0)) ||
        !(b->ports = get_view(h, o_ports, "port_kind", 1, 0, 0)))
        return -1;
    Py_ssize_t n = b->offset->len / 8;
    if (b->caplen->len / 4 != n || b->origlen->len / 4 != n || b->linktype->len / 2 != n ||
        b->extra->len / extra_size != n) {
        PyErr_Format(PyExc_ValueError,
                     "offset, caplen, origlen, linktype and %s must have the same length "
                     "(%zd, %zd, %zd, %zd, %zd)",
                     extra_name, n, b->caplen->len / 4, b->origlen->len / 4, b->linktype->len / 2,
                     b->extra->len / extra_size);
        return -1;
    }
    if (n > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a batch holds at most 2**32-1 packets");
        return -1;
    }
    if (b->ports->len != 65536) {
        PyErr_Format(PyExc_ValueError, "port_kind must have 65536 entries (got %zd)", b->ports->len);
        return -1;
    }
    b->n = n;
    return 0;
}

static PyObject *fastscan_scan(PyObject *self, PyObject *args)
{
    PyObject *o_buf, *o_offset, *o_caplen, *o_origlen, *o_linktype, *o_tp, *o_first, *o_ports;
    PyObject *o_counts, *o_issues, *o_deferred, *o_stats;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OOOOOOOnOOOOO:scan", &o_buf, &o_offset, &o_caplen, &o_origlen,
                          &o_linktype, &o_tp, &o_first, &start, &o_ports, &o_counts, &o_issues,
                          &o_deferred, &o_stats))
        return NULL;

    scan_args a;
    memset(&a, 0, sizeof a);
    held_views h = {.n = 0};
    batch_in b;
    Py_buffer *counts, *issues, *deferred, *stats;
    PyObject *result = NULL;
    if (get_batch(&h, o_buf, o_offset, o_caplen, o_origlen, o_linktype, o_tp, "tp_status", 4, 0,
                  o_first, o_ports, &b) < 0 ||
        !(counts = get_view(&h, o_counts, "counts", 8, 1, 1)) ||
        !(issues = get_view(&h, o_issues, "issues", 0, -1, 1)) ||
        !(deferred = get_view(&h, o_deferred, "deferred", 4, 0, 1)) ||
        !(stats = get_view(&h, o_stats, "stats", 8, 1, 1)))
        goto done;

    Py_ssize_t n = b.n;
    if (start < 0 || start > n) {
        PyErr_Format(PyExc_ValueError, "start %zd out of range [0, %zd]", start, n);
        goto done;
    }
    if (counts->len != (Py_ssize_t)(MAX_DEPTH * N_LAYERS * N_STATUS * 8)) {
        PyErr_Format(PyExc_ValueError, "counts must hold %d int64 ([%d][%d][%d]), got %zd bytes",
                     MAX_DEPTH * N_LAYERS * N_STATUS, MAX_DEPTH, N_LAYERS, N_STATUS, counts->len);
        goto done;
    }
    if ((issues->itemsize != 1 && issues->itemsize != (Py_ssize_t)sizeof(issue_row)) ||
        issues->len % (Py_ssize_t)sizeof(issue_row) != 0) {
        PyErr_Format(PyExc_ValueError, "issues must be an array of %d-byte ISSUE_DTYPE rows",
                     (int)sizeof(issue_row));
        goto done;
    }
    if (deferred->len / 4 < n - start) {
        PyErr_Format(PyExc_ValueError, "deferred needs room for %zd indices, has %zd", n - start,
                     deferred->len / 4);
        goto done;
    }
    if (stats->len != 8 * 8) {
        PyErr_SetString(PyExc_ValueError, "stats must be int64[8]");
        goto done;
    }

    a.buf = b.buf->buf;
    a.buf_len = (size_t)b.buf->len;
    a.offset = b.offset->buf;
    a.caplen = b.caplen->buf;
    a.origlen = b.origlen->buf;
    a.linktype = b.linktype->buf;
    a.tp_status = b.extra->buf;
    a.port_kind = b.ports->buf;
    a.n = (size_t)n;
    a.first_frame = b.first_frame;
    a.counts = counts->buf;
    a.issues = issues->buf;
    a.issues_cap = (size_t)issues->len / sizeof(issue_row);
    a.deferred = deferred->buf;
    a.stats = stats->buf;

    size_t next, n_issues, n_deferred;
    Py_BEGIN_ALLOW_THREADS
    next = scan_loop(&a, (size_t)start, &n_issues, &n_deferred);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nnn)", (Py_ssize_t)next, (Py_ssize_t)n_issues, (Py_ssize_t)n_deferred);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, offset, caplen, origlen, linktype, tp_status, first_frame, start,\n"
"     port_kind, counts, issues, deferred, stats) -> (next_index, n_issues, n_deferred)\n"
"\n"
"Judge the checksums of packets start.. of a batch. Rows go to the beginning of `issues`\n"
"(ISSUE_DTYPE) and `deferred` (uint32 batch indices); `counts` (int64[8][9][7]) and `stats`\n"
"(int64[8]) accumulate. Stops early, before packet next_index, when `issues` lacks room for\n"
"that packet's rows; nothing of that packet has been counted then.");

static PyObject *fastscan_facts(PyObject *self, PyObject *args)
{
    PyObject *o_buf, *o_offset, *o_caplen, *o_origlen, *o_linktype, *o_ts, *o_first, *o_ports, *o_out,
        *o_deferred;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO:facts", &o_buf, &o_offset, &o_caplen, &o_origlen,
                          &o_linktype, &o_ts, &o_first, &o_ports, &o_out, &o_deferred))
        return NULL;

    facts_args a;
    memset(&a, 0, sizeof a);
    held_views h = {.n = 0};
    batch_in b;
    Py_buffer *out, *deferred;
    PyObject *result = NULL;
    if (get_batch(&h, o_buf, o_offset, o_caplen, o_origlen, o_linktype, o_ts, "ts_ns", 8, 1, o_first,
                  o_ports, &b) < 0 ||
        !(out = get_view(&h, o_out, "out", 0, -1, 1)) ||
        !(deferred = get_view(&h, o_deferred, "deferred", 4, 0, 1)))
        goto done;

    Py_ssize_t n = b.n;
    if ((out->itemsize != 1 && out->itemsize != (Py_ssize_t)sizeof(fact_row)) ||
        out->len != n * (Py_ssize_t)sizeof(fact_row)) {
        PyErr_Format(PyExc_ValueError, "out must be an array of %zd %d-byte FACTS_DTYPE rows",
                     n, (int)sizeof(fact_row));
        goto done;
    }
    if (deferred->len / 4 < n) {
        PyErr_Format(PyExc_ValueError, "deferred needs room for %zd indices, has %zd", n,
                     deferred->len / 4);
        goto done;
    }

    a.buf = b.buf->buf;
    a.buf_len = (size_t)b.buf->len;
    a.offset = b.offset->buf;
    a.caplen = b.caplen->buf;
    a.origlen = b.origlen->buf;
    a.linktype = b.linktype->buf;
    a.ts_ns = b.extra->buf;
    a.port_kind = b.ports->buf;
    a.n = (size_t)n;
    a.first_frame = b.first_frame;
    a.out = out->buf;
    a.deferred = deferred->buf;

    size_t n_deferred;
    Py_BEGIN_ALLOW_THREADS
    n_deferred = facts_loop(&a);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t((Py_ssize_t)n_deferred);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(facts_doc,
"facts(buf, offset, caplen, origlen, linktype, ts_ns, first_frame, port_kind, out, deferred)\n"
"     -> n_deferred\n"
"\n"
"The packet fact (badsum.flows.facts.FACTS_DTYPE) of every packet of a batch, into `out` (one\n"
"row per packet). Packets it leaves to `fact_of_frame` are listed at the beginning of `deferred`\n"
"(uint32 batch indices); their rows hold only frame and ts_ns.");

/* ---- flow helpers: what the detectors (badsum/flows) do per packet, over a FACTS_DTYPE batch ---- */

static inline uint64_t fact_u64(const uint8_t *r, size_t off)
{
    uint64_t v;
    memcpy(&v, r + off, 8);
    return to_le64(v);
}

static inline uint32_t fact_u32(const uint8_t *r, size_t off)
{
    uint32_t v;
    memcpy(&v, r + off, 4);
    return to_le32(v);
}

static inline unsigned fact_u16(const uint8_t *r, size_t off)
{
    uint16_t v;
    memcpy(&v, r + off, 2);
    return to_le16(v);
}

#define FLOW_M1 0x9E3779B97F4A7C15ULL
#define FLOW_M2 0xBF58476D1CE4E5B9ULL

/* badsum.flows.facts._mix (the splitmix64 finaliser, as the numpy reference computes it) */
static inline uint64_t flow_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= FLOW_M2;
    x ^= x >> 27;
    return x;
}

static inline uint64_t addr_key(const uint8_t *r, size_t off)
{
    return flow_mix(fact_u64(r, off) * FLOW_M1 ^ fact_u64(r, off + 8));
}

/* The keys of badsum.flows.facts.flow_keys (host_pair: host_pair_keys) of one fact. */
static inline uint64_t fact_key(const uint8_t *r, int host_pair, uint8_t *dir)
{
    uint64_t ks = addr_key(r, offsetof(fact_row, src)), kd = addr_key(r, offsetof(fact_row, dst));
    uint64_t tag = 0;
    if (!host_pair) {
        ks = flow_mix(ks ^ fact_u16(r, offsetof(fact_row, sport)));
        kd = flow_mix(kd ^ fact_u16(r, offsetof(fact_row, dport)));
        tag = (uint64_t)r[offsetof(fact_row, proto)] << 56;
    }
    *dir = ks > kd;
    uint64_t lo = ks < kd ? ks : kd, hi = ks < kd ? kd : ks;
    return flow_mix(lo * FLOW_M1 ^ hi ^ tag);
}

/* A FACTS_DTYPE array as a writable or read-only buffer of n rows. */
static Py_buffer *get_facts(held_views *h, PyObject *obj, const char *name, Py_ssize_t *n)
{
    Py_buffer *v = get_view(h, obj, name, 0, -1, 0);
    if (v == NULL)
        return NULL;
    if ((v->itemsize != 1 && v->itemsize != (Py_ssize_t)sizeof(fact_row)) ||
        v->len % (Py_ssize_t)sizeof(fact_row) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be an array of %d-byte FACTS_DTYPE rows", name,
                     (int)sizeof(fact_row));
        return NULL;
    }
    *n = v->len / (Py_ssize_t)sizeof(fact_row);
    return v;
}

static PyObject *fastscan_flow_keys(PyObject *self, PyObject *args)
{
    PyObject *o_facts, *o_idx, *o_key, *o_dir;
    int host_pair;
    if (!PyArg_ParseTuple(args, "OOpOO:flow_keys", &o_facts, &o_idx, &host_pair, &o_key, &o_dir))
        return NULL;
    held_views h = {.n = 0};
    Py_buffer *facts, *idx = NULL, *key, *dir;
    PyObject *result = NULL;
    Py_ssize_t n;
    if (!(facts = get_facts(&h, o_facts, "facts", &n)) ||
        (o_idx != Py_None && !(idx = get_view(&h, o_idx, "idx", 8, 1, 0))) ||
        !(key = get_view(&h, o_key, "key", 8, 0, 1)) || !(dir = get_view(&h, o_dir, "dir", 1, 0, 1)))
        goto done;
    Py_ssize_t m = idx != NULL ? idx->len / 8 : n;
    if (key->len / 8 != m || dir->len != m) {
        PyErr_Format(PyExc_ValueError, "key and dir need %zd entries (got %zd, %zd)", m, key->len / 8, dir->len);
        goto done;
    }
    const int64_t *ix = idx != NULL ? idx->buf : NULL;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (ix != NULL && (ix[j] < 0 || ix[j] >= n)) {
            PyErr_Format(PyExc_IndexError, "idx[%zd] = %lld out of range [0, %zd)", j, (long long)ix[j], n);
            goto done;
        }
    }
    const uint8_t *base = facts->buf;
    uint64_t *ko = key->buf;
    uint8_t *dout = dir->buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t i = ix != NULL ? (Py_ssize_t)ix[j] : j;
        ko[j] = fact_key(base + sizeof(fact_row) * (size_t)i, host_pair, &dout[j]);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(flow_keys_doc,
"flow_keys(facts, idx, host_pair, key, dir) -> None\n"
"\n"
"badsum.flows.facts.flow_keys (host_pair: host_pair_keys) of the rows `idx` (int64 indices, or\n"
"None for every row) of a FACTS_DTYPE array, into `key` (uint64) and `dir` (uint8).");

/* One slot of a SegmentTable (badsum/flows/base.py): four uint64. */
enum { SEG_KEY = 0, SEG_LAST_TS = 1, SEG_FIRST_TS = 2, SEG_FRAME = 3, SEG_WORDS = 4 };
#define SEG_USED (1ULL << 55) /* the slot holds a segment */
#define SEG_FRAME_MASK (SEG_USED - 1) /* first frame; the top byte holds its status */
#define SEG_AHEAD 8 /* slots prefetched ahead: the table is megabytes, every lookup a miss */
#define SEG_FILTER_BITS 20

static PyObject *fastscan_seg_match(PyObject *self, PyObject *args)
{
    PyObject *o_facts, *o_status, *o_table, *o_filter, *o_idx, *o_prev;
    unsigned long min_payload, min_ip_len;
    if (!PyArg_ParseTuple(args, "OkkOOOOO:seg_match", &o_facts, &min_payload, &min_ip_len, &o_status,
                          &o_table, &o_filter, &o_idx, &o_prev))
        return NULL;
    held_views h = {.n = 0};
    Py_buffer *facts, *status = NULL, *table, *filter = NULL, *idx, *prev;
    PyObject *result = NULL;
    Py_ssize_t n;
    if (!(facts = get_facts(&h, o_facts, "facts", &n)) ||
        (o_status != Py_None && !(status = get_view(&h, o_status, "status", 1, 0, 0))) ||
        !(table = get_view(&h, o_table, "table", 8, 0, 1)) ||
        (o_filter != Py_None && !(filter = get_view(&h, o_filter, "filter", 8, 0, 1))) ||
        !(idx = get_view(&h, o_idx, "idx", 8, 1, 1)) || !(prev = get_view(&h, o_prev, "prev", 8, 1, 1)))
        goto done;
    size_t slots = (size_t)table->len / (8 * SEG_WORDS);
    if (slots == 0 || (slots & (slots - 1)) != 0 || (size_t)table->len != slots * 8 * SEG_WORDS) {
        PyErr_SetString(PyExc_ValueError, "table must hold 2**k slots of 4 uint64");
        goto done;
    }
    if ((status != NULL && status->len != n) || idx->len / 8 < n || prev->len / 8 < 4 * n ||
        (filter != NULL && filter->len != (1 << SEG_FILTER_BITS) / 8)) {
        PyErr_Format(PyExc_ValueError, "status needs %zd entries, idx %zd, prev %zd, filter %d", n, n,
                     4 * n, (1 << SEG_FILTER_BITS) / 64);
        goto done;
    }
    if (status == NULL && filter != NULL) {
        PyErr_SetString(PyExc_ValueError, "a filter needs a status (it marks the stored segments)");
        goto done;
    }
    const uint8_t *base = facts->buf;
    const uint8_t *st = status != NULL ? status->buf : NULL;
    uint64_t *tab = table->buf, *bits = filter != NULL ? filter->buf : NULL, mask = slots - 1;
    int64_t *out = idx->buf, *pv = prev->buf;
    /* scratch for the segments to look up: their key and slot (idx holds their batch index) */
    uint64_t *scratch = PyMem_RawMalloc(sizeof(uint64_t) * 2 * (size_t)(n ? n : 1));
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t *keys = scratch, *slot = scratch + n;
    size_t k = 0;
    Py_BEGIN_ALLOW_THREADS
    size_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + sizeof(fact_row) * (size_t)i;
        if (r[offsetof(fact_row, proto)] != 6 || fact_u32(r, offsetof(fact_row, payload)) < min_payload ||
            fact_u32(r, offsetof(fact_row, ip_len)) < min_ip_len)
            continue;
        uint64_t ports = (uint64_t)fact_u16(r, offsetof(fact_row, sport)) << 16 | fact_u16(r, offsetof(fact_row, dport));
        if (bits != NULL) {
            /* Only ports (directional) that ever stored a segment can repeat one. A segment to
             * store sets its bit here, in frame order, so later rows of this batch see it. */
            uint64_t b = (ports * FLOW_M1) >> (64 - SEG_FILTER_BITS);
            if (st[i])
                bits[b >> 6] |= 1ULL << (b & 63);
            else if (!(bits[b >> 6] >> (b & 63) & 1))
                continue;
        }
        uint64_t key = (uint64_t)fact_u32(r, offsetof(fact_row, seq)) << 32 | ports;
        out[m] = i;
        keys[m] = key;
        slot[m] = flow_mix(key * FLOW_M1) & mask;
        m++;
    }
    /* In frame order: a hit reports the slot's segment and refreshes its last send; a miss stores
     * the segment when it is one to store (a colliding older segment is lost). k <= j: the hit
     * list overwrites only entries of idx already read. */
    for (size_t j = 0; j < m; j++) {
        if (j + SEG_AHEAD < m)
            __builtin_prefetch(tab + SEG_WORDS * slot[j + SEG_AHEAD], 1);
        size_t i = (size_t)out[j];
        uint64_t key = keys[j], *e = tab + SEG_WORDS * slot[j];
        const uint8_t *r = base + sizeof(fact_row) * i;
        int64_t ts = (int64_t)fact_u64(r, offsetof(fact_row, ts_ns));
        if ((e[SEG_FRAME] & SEG_USED) && e[SEG_KEY] == key) {
            pv[4 * k] = (int64_t)e[SEG_LAST_TS];
            pv[4 * k + 1] = (int64_t)(e[SEG_FRAME] & SEG_FRAME_MASK);
            pv[4 * k + 2] = (int64_t)e[SEG_FIRST_TS];
            pv[4 * k + 3] = (int64_t)(e[SEG_FRAME] >> 56);
            e[SEG_LAST_TS] = (uint64_t)ts;
            out[k++] = (int64_t)i;
        } else if (st == NULL || st[i]) {
            e[SEG_KEY] = key;
            e[SEG_LAST_TS] = e[SEG_FIRST_TS] = (uint64_t)ts;
            e[SEG_FRAME] = (fact_u64(r, offsetof(fact_row, frame)) & SEG_FRAME_MASK) | SEG_USED |
                           (uint64_t)(st != NULL ? st[i] : 0) << 56;
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(scratch);
    result = PyLong_FromSize_t(k);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(seg_match_doc,
"seg_match(facts, min_payload, min_ip_len, status, table, filter, idx, prev) -> k\n"
"\n"
"The retransmission finder of badsum.flows.base.SegmentTable over one FACTS_DTYPE batch, in\n"
"frame order. Segments are the TCP rows with payload >= min_payload and ip_len >= min_ip_len,\n"
"keyed seq << 32 | sport << 16 | dport. A segment whose key is in `table` (uint64, 2**k slots of\n"
"[key, last ts, first ts, used | status << 56 | first frame]) is a hit: its batch index goes to\n"
"idx[:k] and the slot's [last ts, first frame, first ts, status] to prev[4k:4k+4], then the\n"
"slot's last ts becomes this one's. Other segments are stored when status (uint8 per row, or\n"
"None: all) is non-zero. With `filter` (uint64[2**14], needs status) only segments whose ports\n"
"stored a segment before are looked up.");

/* PairDetector's slot arrays (badsum/flows/pairs.py), taken together. */
enum { PAIR_REQ0 = 0, PAIR_REP0 = 2, PAIR_UDP0 = 4, PAIR_COLS = 6 };

static PyObject *fastscan_pair_count(PyObject *self, PyObject *args)
{
    PyObject *o_facts, *o_idx, *o_key, *o_counts, *o_adir, *o_ipver, *o_depth, *o_first, *o_last, *o_addr;
    int udp;
    if (!PyArg_ParseTuple(args, "OOpOOOOOOOO:pair_count", &o_facts, &o_idx, &udp, &o_key, &o_counts, &o_adir,
                          &o_ipver, &o_depth, &o_first, &o_last, &o_addr))
        return NULL;
    held_views h = {.n = 0};
    Py_buffer *facts, *idx, *key, *counts, *adir, *ipver, *depth, *first, *last, *addr;
    PyObject *result = NULL;
    Py_ssize_t n;
    if (!(facts = get_facts(&h, o_facts, "facts", &n)) || !(idx = get_view(&h, o_idx, "idx", 8, 1, 0)) ||
        !(key = get_view(&h, o_key, "key", 8, 0, 1)) || !(counts = get_view(&h, o_counts, "counts", 8, 1, 1)) ||
        !(adir = get_view(&h, o_adir, "a_dir", 1, 1, 1)) || !(ipver = get_view(&h, o_ipver, "ipver", 1, 0, 1)) ||
        !(depth = get_view(&h, o_depth, "depth", 1, 0, 1)) || !(first = get_view(&h, o_first, "first", 8, 1, 1)) ||
        !(last = get_view(&h, o_last, "last", 8, 1, 1)) || !(addr = get_view(&h, o_addr, "addr", 1, 0, 1)))
        goto done;
    size_t size = (size_t)key->len / 8;
    if (size == 0 || (size & (size - 1)) != 0 || (size_t)counts->len != size * 8 * PAIR_COLS ||
        (size_t)adir->len != size || (size_t)ipver->len != size || (size_t)depth->len != size ||
        (size_t)first->len != size * 16 || (size_t)last->len != size * 16 || (size_t)addr->len != size * 32) {
        PyErr_SetString(PyExc_ValueError, "pair table arrays disagree in size (2**k slots)");
        goto done;
    }
    Py_ssize_t m = idx->len / 8;
    const int64_t *ix = idx->buf;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (ix[j] < 0 || ix[j] >= n) {
            PyErr_Format(PyExc_IndexError, "idx[%zd] = %lld out of range [0, %zd)", j, (long long)ix[j], n);
            goto done;
        }
    }
    const uint8_t *base = facts->buf;
    uint64_t *tk = key->buf, mask = size - 1;
    int64_t *tc = counts->buf, *tf = first->buf, *tl = last->buf;
    int8_t *ta = adir->buf;
    uint8_t *tv = ipver->buf, *td = depth->buf, *tad = addr->buf;
    long long created = 0, evicted = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        const uint8_t *r = base + sizeof(fact_row) * (size_t)ix[j];
        int col;
        if (udp) {
            col = PAIR_UDP0;
        } else {
            unsigned p = r[offsetof(fact_row, proto)], t = r[offsetof(fact_row, icmp_type)];
            int req = (p == 1 && t == 8) || (p == 58 && t == 128), rep = (p == 1 && t == 0) || (p == 58 && t == 129);
            if (!req && !rep)
                continue;
            col = req ? PAIR_REQ0 : PAIR_REP0;
        }
        uint8_t d;
        uint64_t k = fact_key(r, 1, &d) | 1; /* 0 marks an empty slot */
        size_t s = (size_t)(flow_mix(k) & mask);
        int64_t frame = (int64_t)fact_u64(r, offsetof(fact_row, frame));
        int64_t ts = (int64_t)fact_u64(r, offsetof(fact_row, ts_ns));
        if (tk[s] != k) {
            if (udp)
                continue; /* UDP is counted only for pairs that exchanged echo */
            evicted += tk[s] != 0;
            created++;
            tk[s] = k;
            memset(tc + PAIR_COLS * s, 0, 8 * PAIR_COLS);
            /* the initiator: the sender of the pair's first echo request (or the receiver of its first reply) */
            ta[s] = (int8_t)(col == PAIR_REQ0 ? d : 1 - d);
            tv[s] = r[offsetof(fact_row, ipver)];
            td[s] = r[offsetof(fact_row, depth)];
            tf[2 * s] = frame;
            tf[2 * s + 1] = ts;
            memcpy(tad + 32 * s + 16 * d, r + offsetof(fact_row, src), 16);
            memcpy(tad + 32 * s + 16 * (1 - d), r + offsetof(fact_row, dst), 16);
        }
        if (!udp) {
            tl[2 * s] = frame;
            tl[2 * s + 1] = ts;
        }
        tc[PAIR_COLS * s + col + d]++;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("LL", created, evicted);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(pair_count_doc,
"pair_count(facts, idx, udp, key, counts, a_dir, ipver, depth, first, last, addr) -> (created, evicted)\n"
"\n"
"The host-pair table of badsum.flows.pairs.PairDetector over the rows `idx` (int64) of a FACTS_DTYPE\n"
"batch, in order. udp false: the rows are ICMP; echo requests and replies are counted per host pair\n"
"and direction (a pair not in its slot takes the slot: the older pair is evicted). udp true: the rows\n"
"are UDP, counted only for pairs already in the table. Slot = splitmix(host_pair_key | 1) & (size - 1).");

/* PMTU_DTYPE (badsum/flows/pmtu.py): what the ICMP join needs of a packet, 32 bytes instead of 136. */
typedef struct {
    uint64_t key;   /* directional: addresses, protocol, and ports for TCP and UDP */
    uint64_t frame;
    uint32_t seq;
    uint32_t ip_len;
    uint16_t ipid;
    uint8_t pad[6];
} pmtu_row;

_Static_assert(sizeof(pmtu_row) == 32, "PMTU_DTYPE is 32 bytes");

static PyObject *fastscan_pmtu_pack(PyObject *self, PyObject *args)
{
    PyObject *o_facts, *o_out;
    if (!PyArg_ParseTuple(args, "OO:pmtu_pack", &o_facts, &o_out))
        return NULL;
    held_views h = {.n = 0};
    Py_buffer *facts, *out;
    PyObject *result = NULL;
    Py_ssize_t n;
    if (!(facts = get_facts(&h, o_facts, "facts", &n)) || !(out = get_view(&h, o_out, "out", 0, -1, 1)))
        goto done;
    if (out->len != n * (Py_ssize_t)sizeof(pmtu_row)) {
        PyErr_Format(PyExc_ValueError, "out needs %zd bytes", n * (Py_ssize_t)sizeof(pmtu_row));
        goto done;
    }
    const uint8_t *base = facts->buf;
    uint8_t *o = out->buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + sizeof(fact_row) * (size_t)i;
        unsigned proto = r[offsetof(fact_row, proto)];
        uint64_t k = flow_mix(addr_key(r, offsetof(fact_row, src)) * FLOW_M1 ^ addr_key(r, offsetof(fact_row, dst)));
        uint64_t ports = 0;
        if (proto == 6 || proto == 17)
            ports = (uint64_t)fact_u16(r, offsetof(fact_row, sport)) << 16 | fact_u16(r, offsetof(fact_row, dport));
        pmtu_row p;
        memset(&p, 0, sizeof p);
        p.key = to_le64(flow_mix(k ^ ((uint64_t)proto << 56 | ports)));
        p.frame = to_le64(fact_u64(r, offsetof(fact_row, frame)));
        p.seq = to_le32(proto == 6 ? fact_u32(r, offsetof(fact_row, seq)) : 0);
        p.ip_len = to_le32(fact_u32(r, offsetof(fact_row, ip_len)));
        p.ipid = to_le16((uint16_t)fact_u16(r, offsetof(fact_row, ipid)));
        memcpy(o + sizeof(pmtu_row) * (size_t)i, &p, sizeof p);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_views(&h);
    return result;
}

PyDoc_STRVAR(pmtu_pack_doc,
"pmtu_pack(facts, out) -> None\n"
"\n"
"One 32-byte PMTU_DTYPE row per FACTS_DTYPE row (badsum.flows.pmtu): a directional 64-bit key of\n"
"addresses, protocol and (TCP, UDP) ports, frame, TCP sequence number (0 otherwise), IP length, IP id.");

static PyMethodDef fastscan_methods[] = {
    {"scan", fastscan_scan, METH_VARARGS, scan_doc},
    {"facts", fastscan_facts, METH_VARARGS, facts_doc},
    {"flow_keys", fastscan_flow_keys, METH_VARARGS, flow_keys_doc},
    {"seg_match", fastscan_seg_match, METH_VARARGS, seg_match_doc},
    {"pair_count", fastscan_pair_count, METH_VARARGS, pair_count_doc},
    {"pmtu_pack", fastscan_pmtu_pack, METH_VARARGS, pmtu_pack_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastscan_module = {
    PyModuleDef_HEAD_INIT, "_fastscan", "The checksum scanner's and the packet-facts extractor's C fast path.", -1, fastscan_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastscan(void)
{
    PyObject *m = PyModule_Create(&fastscan_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_ROWS_PER_PACKET", ROWS_MAX) < 0 ||
        PyModule_AddIntConstant(m, "ISSUE_SIZE", (long)sizeof(issue_row)) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0 ||
        PyModule_AddIntConstant(m, "N_LAYERS", N_LAYERS) < 0 ||
        PyModule_AddIntConstant(m, "N_STATUS", N_STATUS) < 0 ||
        PyModule_AddIntConstant(m, "FACT_SIZE", (long)sizeof(fact_row)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
