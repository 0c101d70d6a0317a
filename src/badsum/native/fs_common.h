/*
 * What the units of badsum.native._fastscan share (scan.c, facts.c, flowk.c, module.c): byte
 * readers, RFC 1071 arithmetic, the record layouts Python reads (ISSUE_DTYPE, FACTS_DTYPE), and
 * the walks every packet starts with: the link header with its VLAN tags, and the IPv6 extension
 * headers. Protocol numbers come from protofacts.h, generated from badsum/wire/protofacts.py.
 *
 * Input is hostile: every read is bounded by the caller's `cap`; loops are bounded by counts.
 */
#ifndef BADSUM_FS_COMMON_H
#define BADSUM_FS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "protofacts.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BIG_ENDIAN 1
#else
#define HOST_BIG_ENDIAN 0
#endif

/* Fixed header sizes (RFC 791, 8200, 768, 9293, 792). */
enum { IPV4_MIN_HLEN = 20, IPV6_HLEN = 40, UDP_HLEN = 8, TCP_MIN_HLEN = 20, ICMP_HLEN = 8 };

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

/* Python's record arrays are little-endian whatever the host. */
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

static inline size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* Bytes of [pos, end) inside a capture of cap bytes. */
static inline size_t avail(size_t pos, size_t end, size_t cap)
{
    size_t b = min_sz(end, cap);
    return b > pos ? b - pos : 0;
}

/* ---- RFC 1071 arithmetic ---- */

/* End-around-carry fold to 16 bits; 0 only when s is 0. The 32-bit halves are added with their
 * carry brought around, then the 16-bit halves twice (callgrind: the scan's most run lines). */
static inline uint32_t fold(uint64_t s)
{
    uint32_t hi = (uint32_t)(s >> 32), t = (uint32_t)s + hi;
    t += t < hi;
    t = (t & 0xffffu) + (t >> 16);
    return (t & 0xffffu) + (t >> 16);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FS_WIDE_SUM 1

/* Set once by the module's init: the CPU has AVX2 (module.c). Never -march=native: the build
 * runs on other machines than the one it was made on. */
extern int fs_have_avx2;

/*
 * The 32-bit native words of p[0..n) (n a multiple of 32) summed 32 bytes at a time: each 64-bit
 * lane adds its low and its high word into two accumulators, which cannot carry out before 2**32
 * adds. The result is what the scalar loop below would have added, so the two combine.
 */
__attribute__((target("avx2"))) static inline uint64_t sum_words_avx2(const uint8_t *p, size_t n)
{
    const __m256i low = _mm256_set1_epi64x(0xffffffff);
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (; n >= 64; p += 64, n -= 64) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)p), v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
        lo0 = _mm256_add_epi64(lo0, _mm256_and_si256(v0, low));
        hi0 = _mm256_add_epi64(hi0, _mm256_srli_epi64(v0, 32));
        lo1 = _mm256_add_epi64(lo1, _mm256_and_si256(v1, low));
        hi1 = _mm256_add_epi64(hi1, _mm256_srli_epi64(v1, 32));
    }
    if (n) {
        __m256i v = _mm256_loadu_si256((const __m256i *)p);
        lo0 = _mm256_add_epi64(lo0, _mm256_and_si256(v, low));
        hi0 = _mm256_add_epi64(hi0, _mm256_srli_epi64(v, 32));
    }
    __m256i t = _mm256_add_epi64(_mm256_add_epi64(lo0, hi0), _mm256_add_epi64(lo1, hi1));
    __m128i u = _mm_add_epi64(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    return (uint64_t)_mm_cvtsi128_si64(u) + (uint64_t)_mm_extract_epi64(u, 1);
}
#endif

/*
 * Folded one's complement sum of the big-endian 16-bit words of p[0..n) (odd tail padded with a
 * zero low byte); 0 only when every byte is 0. Native 32-bit loads summed into a 64-bit
 * accumulator; on a little-endian host the words come out byte-swapped and one swap of the folded
 * result corrects that (RFC 1071 section 2(B)). Four accumulators keep the adds independent; with
 * AVX2 the bulk goes 64 bytes at a time.
 */
static inline uint32_t csum_be(const uint8_t *p, size_t n)
{
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#ifdef FS_WIDE_SUM
    if (n >= 128 && fs_have_avx2) {
        size_t bulk = n & ~(size_t)31;
        a3 = sum_words_avx2(p, bulk);
        p += bulk;
        n -= bulk;
    }
#endif
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
    /* Words are 32 bits and n < 2**32, so no accumulator reaches 2**62 and their plain sum cannot
     * wrap; one fold of it equals folding each first (both are the sum modulo 0xffff, and 0 only
     * for all-zero bytes). */
    uint32_t f = fold(a0 + a1 + a2 + a3);
#if !HOST_BIG_ENDIAN
    f = ((f & 0xffu) << 8) | (f >> 8);
#endif
    return f;
}

/*
 * Sum of n bytes at p, the 16-bit field at p+field counted as zero (field is even). One pass, the
 * field taken out again by adding its complement (RFC 1624): right modulo 0xffff, but where the
 * other bytes are all zero that gives 0xffff for 0, so a 0xffff is summed again in two parts.
 */
static inline uint32_t csum_without(const uint8_t *p, size_t n, size_t field)
{
    uint32_t s = fold((uint64_t)csum_be(p, n) + (~be16(p + field) & 0xffffu));
    if (s == 0xffff)
        s = fold((uint64_t)csum_be(p, field) + csum_be(p + field + 2, n - field - 2));
    return s;
}

/* ---- the walks ---- */

/* A walk's answer: an IP packet (of a version), nothing to read, or "the decoder's". */
enum { NET_NONE, NET_IPV4, NET_IPV6, NET_DEFER };
/* A packet's answer: done here, or deferred whole to the Python decoder. */
enum { R_DONE = 0, R_DEFER = 1 };

/*
 * Where a link walk ends when the fast path and the decoder (badsum/wire/link.py) part ways. The
 * checksum scan may leave any frame to the decoder, and leaves it whatever is odd; the facts
 * extractor must give the decoder's own answer, so it mirrors it exactly. They once had a walker
 * each (4 tags against 8, deferring against "no packet"); these fields are all that differed.
 */
typedef struct {
    int max_tags; /* VLAN tags followed: SCAN_VLAN_TAGS, or MAX_VLAN_TAGS as wire/link._vlan_tags */
    int cut;      /* a link header or tag cut short: NET_DEFER, or NET_NONE (link.truncated) */
    int unsure;   /* what the decoder finds no IP in (more tags, an 802.3 length, raw IP of another
                   * version, ETH_P_MAYBE_IP): NET_DEFER, or NET_NONE as the decoder does */
} link_mode;

/* The ethertype chain from `off`, where `et` was read: VLAN tags, then IP, the decoder's, or none. */
static inline __attribute__((always_inline)) int walk_ethertype(unsigned et, const uint8_t *p, size_t cap,
                                                                size_t off, size_t *l3, const link_mode *m)
{
    for (int tags = 0;; tags++) {
        switch (et) {
        case ETH_P_IP:
            *l3 = off;
            return NET_IPV4;
        case ETH_P_IPV6:
            *l3 = off;
            return NET_IPV6;
        CASE_VLAN_TPIDS:
            if (tags == m->max_tags)
                return m->unsure;
            if (cap - off < 4)
                return m->cut;
            et = be16(p + off + 2);
            off += 4;
            break;
        CASE_ETH_P_DECODER_FOLLOWS:
            return NET_DEFER;
        CASE_ETH_P_MAYBE_IP:
            return m->unsure;
        default:
            /* An 802.3 length: LLC, maybe SNAP-encapsulated IP, which the decoder reads as none. */
            return et < ETH_P_802_3_MIN ? m->unsure : NET_NONE;
        }
    }
}

/* The link header of `linktype` at p (cap bytes): where the IP header starts, in *l3. */
static inline __attribute__((always_inline)) int link_walk(unsigned linktype, const uint8_t *p, size_t cap,
                                                           size_t *l3, const link_mode *m)
{
    switch (linktype) {
    case LINKTYPE_ETHERNET:
        if (cap < ETH_HLEN)
            return m->cut;
        return walk_ethertype(be16(p + 12), p, cap, ETH_HLEN, l3, m);
    case LINKTYPE_LINUX_SLL: /* libpcap re-inserts a stripped VLAN tag at the protocol field */
        if (cap < SLL_HLEN)
            return m->cut;
        return walk_ethertype(be16(p + SLL_HLEN - 2), p, cap, SLL_HLEN, l3, m);
    case LINKTYPE_LINUX_SLL2:
        if (cap < SLL2_HLEN)
            return m->cut;
        return walk_ethertype(be16(p), p, cap, SLL2_HLEN, l3, m);
    case LINKTYPE_RAW:
    case LINKTYPE_RAW_12:
    case LINKTYPE_RAW_14: /* the version nibble decides */
        if (cap < 1)
            return m->cut;
        *l3 = 0;
        switch (p[0] >> 4) {
        case 4:
            return NET_IPV4;
        case 6:
            return NET_IPV6;
        default:
            return m->unsure;
        }
    case LINKTYPE_IPV4:
        *l3 = 0;
        return NET_IPV4;
    case LINKTYPE_IPV6:
        *l3 = 0;
        return NET_IPV6;
    case LINKTYPE_NULL:
    case LINKTYPE_LOOP: {
        /* NULL holds the family in the writer's byte order, LOOP in network order: the smaller
         * reading is the family either way, as wire/link.decode_link takes it. */
        if (cap < NULL_HLEN)
            return m->cut;
        uint32_t a = le32(p), b = be32(p), fam = a < b ? a : b;
        *l3 = NULL_HLEN;
        switch (fam) {
        case NULL_AF_INET:
            return NET_IPV4;
        CASE_NULL_AF_INET6:
            return NET_IPV6;
        default:
            return NET_NONE;
        }
    }
    default:
        return NET_DEFER; /* PPP and link types the decoder may learn */
    }
}

static inline int ipv6_ext(unsigned nh)
{
    switch (nh) {
    CASE_IPV6_EXT_HEADERS:
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

/* The extension headers of the IPv6 packet at p[pos] (its fixed header captured). */
static inline void walk_ipv6(const uint8_t *p, size_t cap, size_t pos, ipv6_walk *w)
{
    unsigned nh = p[pos + 6];
    size_t c = pos + IPV6_HLEN;
    memset(w, 0, sizeof *w);
    for (int n = 0; ipv6_ext(nh) && n < MAX_IPV6_EXT_HEADERS; n++) {
        if (nh == IPPROTO_FRAGMENT) {
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
        /* RFC 4302: AH counts 32-bit words less 2; the others 8-octet units less 1 */
        size_t size = nh == IPPROTO_AH ? ((size_t)hl + 2) * 4 : ((size_t)hl + 1) * 8;
        if (cap < c + size)
            goto truncated;
        if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_DSTOPTS) {
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
                if (body[i] == IPV6_OPT_JUMBO && ln == 4) {
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
    w->proto = IPPROTO_NONE; /* ipv6.ext_header_truncated: no upper layer */
    w->upper = c;
}

/* Where the IPv6 packet at `pos` ends: its payload length, else (0: RFC 2675) the Jumbo Payload
 * option's length, else `otherwise` (BIG TCP / GSO as captured carries neither). */
static inline size_t ipv6_end(size_t pos, size_t plen, const ipv6_walk *w, size_t otherwise)
{
    if (plen)
        return pos + IPV6_HLEN + plen;
    if (w->jumbo)
        return pos + IPV6_HLEN + (size_t)w->jumbo_len;
    return otherwise;
}

/* ---- ISSUE_DTYPE: the contract with badsum/checksum/verdict.py (must not drift) ---- */

enum { N_LAYERS = 9, N_STATUS = 7 };

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

/* A packet yields at most an IPv4 header and an L4 checksum per tunnel level. */
#define ROWS_MAX (2 * MAX_DEPTH)

/* 72 bytes, little-endian fields, no implicit padding. */
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

/* ---- FACTS_DTYPE: the contract with badsum/flows/facts.py ---- */

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

#endif
