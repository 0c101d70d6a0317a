/*
 * The flow kernels of badsum.native._fastscan: what the detectors of badsum/flows do per packet,
 * over a FACTS_DTYPE batch (flow keys, the retransmission finder's segment table, the host-pair
 * table, the PMTU join's packed rows). Each is the C twin of a numpy reference its tests compare.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fs_module.h"

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

/* Every index of idx[0..m) names a row of an n-row batch: 0, or -1 with IndexError set. */
static int check_indices(const int64_t *ix, Py_ssize_t m, Py_ssize_t n)
{
    for (Py_ssize_t j = 0; j < m; j++) {
        if (ix[j] < 0 || ix[j] >= n) {
            PyErr_Format(PyExc_IndexError, "idx[%zd] = %lld out of range [0, %zd)", j, (long long)ix[j], n);
            return -1;
        }
    }
    return 0;
}

#define FACTS_ARG {"facts", ARG_ROWS, sizeof(fact_row), 0, 0, "FACTS_DTYPE"}

/* ---- flow_keys ---- */

enum { K_FACTS, K_IDX, K_HOST_PAIR, K_KEY, K_DIR, K_NARGS };

static const arg_spec flow_keys_spec[K_NARGS] = {
    [K_FACTS] = FACTS_ARG,
    [K_IDX] = {"idx", ARG_INTS, 8, ARG_SIGNED | ARG_OPTIONAL},
    [K_HOST_PAIR] = {"host_pair", ARG_BOOL},
    [K_KEY] = {"key", ARG_INTS, 8, ARG_WRITABLE},
    [K_DIR] = {"dir", ARG_INTS, 1, ARG_WRITABLE},
};

PyObject *fastscan_flow_keys(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "flow_keys", flow_keys_spec, K_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = v[K_FACTS].items;
    const int64_t *ix = v[K_IDX].view != NULL ? v[K_IDX].view->buf : NULL;
    Py_ssize_t m = ix != NULL ? v[K_IDX].items : n;
    if (v[K_KEY].items != m || v[K_DIR].items != m) {
        PyErr_Format(PyExc_ValueError, "key and dir need %zd entries (got %zd, %zd)", m, v[K_KEY].items, v[K_DIR].items);
        goto done;
    }
    if (ix != NULL && check_indices(ix, m, n) < 0)
        goto done;
    const uint8_t *base = v[K_FACTS].view->buf;
    uint64_t *ko = v[K_KEY].view->buf;
    uint8_t *dout = v[K_DIR].view->buf;
    int host_pair = v[K_HOST_PAIR].flag;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        Py_ssize_t i = ix != NULL ? (Py_ssize_t)ix[j] : j;
        ko[j] = fact_key(base + sizeof(fact_row) * (size_t)i, host_pair, &dout[j]);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_args(&c);
    return result;
}

const char flow_keys_doc[] =
"flow_keys(facts, idx, host_pair, key, dir) -> None\n"
"\n"
"badsum.flows.facts.flow_keys (host_pair: host_pair_keys) of the rows `idx` (int64 indices, or\n"
"None for every row) of a FACTS_DTYPE array, into `key` (uint64) and `dir` (uint8).";

/* ---- seg_match ---- */

/* One slot of a SegmentTable (badsum/flows/base.py): four uint64. */
enum { SEG_KEY = 0, SEG_LAST_TS = 1, SEG_FIRST_TS = 2, SEG_FRAME = 3, SEG_WORDS = 4 };
#define SEG_USED (1ULL << 55) /* the slot holds a segment */
#define SEG_FRAME_MASK (SEG_USED - 1) /* first frame; the top byte holds its status */
#define SEG_AHEAD 8 /* slots prefetched ahead: the table is megabytes, every lookup a miss */
#define SEG_FILTER_BITS 20

enum { G_FACTS, G_MIN_PAYLOAD, G_MIN_IP_LEN, G_STATUS, G_TABLE, G_FILTER, G_IDX, G_PREV, G_NARGS };

static const arg_spec seg_match_spec[G_NARGS] = {
    [G_FACTS] = FACTS_ARG,
    [G_MIN_PAYLOAD] = {"min_payload", ARG_U64},
    [G_MIN_IP_LEN] = {"min_ip_len", ARG_U64},
    [G_STATUS] = {"status", ARG_INTS, 1, ARG_OPTIONAL},
    [G_TABLE] = {"table", ARG_INTS, 8, ARG_WRITABLE},
    [G_FILTER] = {"filter", ARG_INTS, 8, ARG_WRITABLE | ARG_OPTIONAL},
    [G_IDX] = {"idx", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE},
    [G_PREV] = {"prev", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE},
};

PyObject *fastscan_seg_match(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "seg_match", seg_match_spec, G_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = v[G_FACTS].items;
    uint64_t min_payload = v[G_MIN_PAYLOAD].u, min_ip_len = v[G_MIN_IP_LEN].u;
    Py_buffer *status = v[G_STATUS].view, *filter = v[G_FILTER].view;
    size_t slots = (size_t)v[G_TABLE].items / SEG_WORDS;
    if (slots == 0 || (slots & (slots - 1)) != 0 || (size_t)v[G_TABLE].items != slots * SEG_WORDS) {
        PyErr_SetString(PyExc_ValueError, "table must hold 2**k slots of 4 uint64");
        goto done;
    }
    if ((status != NULL && v[G_STATUS].items != n) || v[G_IDX].items < n || v[G_PREV].items < 4 * n ||
        (filter != NULL && v[G_FILTER].items != (1 << SEG_FILTER_BITS) / 64)) {
        PyErr_Format(PyExc_ValueError, "status needs %zd entries, idx %zd, prev %zd, filter %d", n, n, 4 * n,
                     (1 << SEG_FILTER_BITS) / 64);
        goto done;
    }
    if (status == NULL && filter != NULL) {
        PyErr_SetString(PyExc_ValueError, "a filter needs a status (it marks the stored segments)");
        goto done;
    }
    const uint8_t *base = v[G_FACTS].view->buf;
    const uint8_t *st = status != NULL ? status->buf : NULL;
    uint64_t *tab = v[G_TABLE].view->buf, *bits = filter != NULL ? filter->buf : NULL, mask = slots - 1;
    int64_t *out = v[G_IDX].view->buf, *pv = v[G_PREV].view->buf;
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
        if (r[offsetof(fact_row, proto)] != IPPROTO_TCP || fact_u32(r, offsetof(fact_row, payload)) < min_payload ||
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
    release_args(&c);
    return result;
}

const char seg_match_doc[] =
"seg_match(facts, min_payload, min_ip_len, status, table, filter, idx, prev) -> k\n"
"\n"
"The retransmission finder of badsum.flows.base.SegmentTable over one FACTS_DTYPE batch, in\n"
"frame order. Segments are the TCP rows with payload >= min_payload and ip_len >= min_ip_len,\n"
"keyed seq << 32 | sport << 16 | dport. A segment whose key is in `table` (uint64, 2**k slots of\n"
"[key, last ts, first ts, used | status << 56 | first frame]) is a hit: its batch index goes to\n"
"idx[:k] and the slot's [last ts, first frame, first ts, status] to prev[4k:4k+4], then the\n"
"slot's last ts becomes this one's. Other segments are stored when status (uint8 per row, or\n"
"None: all) is non-zero. With `filter` (uint64[2**14], needs status) only segments whose ports\n"
"stored a segment before are looked up.";

/* ---- pair_count ---- */

/* PairDetector's slot arrays (badsum/flows/pairs.py), taken together. */
enum { PAIR_REQ0 = 0, PAIR_REP0 = 2, PAIR_UDP0 = 4, PAIR_COLS = 6 };

enum { P_FACTS, P_IDX, P_UDP, P_KEY, P_COUNTS, P_ADIR, P_IPVER, P_DEPTH, P_FIRST, P_LAST, P_ADDR, P_NARGS };

static const arg_spec pair_count_spec[P_NARGS] = {
    [P_FACTS] = FACTS_ARG,
    [P_IDX] = {"idx", ARG_INTS, 8, ARG_SIGNED},
    [P_UDP] = {"udp", ARG_BOOL},
    [P_KEY] = {"key", ARG_INTS, 8, ARG_WRITABLE},
    [P_COUNTS] = {"counts", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE},
    [P_ADIR] = {"a_dir", ARG_INTS, 1, ARG_SIGNED | ARG_WRITABLE},
    [P_IPVER] = {"ipver", ARG_INTS, 1, ARG_WRITABLE},
    [P_DEPTH] = {"depth", ARG_INTS, 1, ARG_WRITABLE},
    [P_FIRST] = {"first", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE},
    [P_LAST] = {"last", ARG_INTS, 8, ARG_SIGNED | ARG_WRITABLE},
    [P_ADDR] = {"addr", ARG_INTS, 1, ARG_WRITABLE},
};

PyObject *fastscan_pair_count(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "pair_count", pair_count_spec, P_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = v[P_FACTS].items;
    size_t size = (size_t)v[P_KEY].items;
    if (size == 0 || (size & (size - 1)) != 0 || (size_t)v[P_COUNTS].items != size * PAIR_COLS ||
        (size_t)v[P_ADIR].items != size || (size_t)v[P_IPVER].items != size || (size_t)v[P_DEPTH].items != size ||
        (size_t)v[P_FIRST].items != size * 2 || (size_t)v[P_LAST].items != size * 2 ||
        (size_t)v[P_ADDR].items != size * 32) {
        PyErr_SetString(PyExc_ValueError, "pair table arrays disagree in size (2**k slots)");
        goto done;
    }
    Py_ssize_t m = v[P_IDX].items;
    const int64_t *ix = v[P_IDX].view->buf;
    if (check_indices(ix, m, n) < 0)
        goto done;
    int udp = v[P_UDP].flag;
    const uint8_t *base = v[P_FACTS].view->buf;
    uint64_t *tk = v[P_KEY].view->buf, mask = size - 1;
    int64_t *tc = v[P_COUNTS].view->buf, *tf = v[P_FIRST].view->buf, *tl = v[P_LAST].view->buf;
    int8_t *ta = v[P_ADIR].view->buf;
    uint8_t *tv = v[P_IPVER].view->buf, *td = v[P_DEPTH].view->buf, *tad = v[P_ADDR].view->buf;
    long long created = 0, evicted = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        const uint8_t *r = base + sizeof(fact_row) * (size_t)ix[j];
        int col;
        if (udp) {
            col = PAIR_UDP0;
        } else {
            unsigned p = r[offsetof(fact_row, proto)], t = r[offsetof(fact_row, icmp_type)];
            /* echo request and reply: RFC 792 types 8 and 0, RFC 4443 types 128 and 129 */
            int req = (p == IPPROTO_ICMP && t == 8) || (p == IPPROTO_ICMPV6 && t == 128);
            int rep = (p == IPPROTO_ICMP && t == 0) || (p == IPPROTO_ICMPV6 && t == 129);
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
    release_args(&c);
    return result;
}

const char pair_count_doc[] =
"pair_count(facts, idx, udp, key, counts, a_dir, ipver, depth, first, last, addr) -> (created, evicted)\n"
"\n"
"The host-pair table of badsum.flows.pairs.PairDetector over the rows `idx` (int64) of a FACTS_DTYPE\n"
"batch, in order. udp false: the rows are ICMP; echo requests and replies are counted per host pair\n"
"and direction (a pair not in its slot takes the slot: the older pair is evicted). udp true: the rows\n"
"are UDP, counted only for pairs already in the table. Slot = splitmix(host_pair_key | 1) & (size - 1).";

/* ---- pmtu_pack ---- */

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

enum { M_FACTS, M_OUT, M_NARGS };

static const arg_spec pmtu_pack_spec[M_NARGS] = {
    [M_FACTS] = FACTS_ARG,
    [M_OUT] = {"out", ARG_ROWS, sizeof(pmtu_row), ARG_WRITABLE, 0, "PMTU_DTYPE"},
};

PyObject *fastscan_pmtu_pack(PyObject *self, PyObject *args)
{
    call_args c;
    PyObject *result = NULL;
    if (parse_args(args, "pmtu_pack", pmtu_pack_spec, M_NARGS, &c) < 0)
        goto done;
    const arg_val *v = c.v;
    Py_ssize_t n = v[M_FACTS].items;
    if (v[M_OUT].items != n) {
        PyErr_Format(PyExc_ValueError, "out needs %zd bytes", n * (Py_ssize_t)sizeof(pmtu_row));
        goto done;
    }
    const uint8_t *base = v[M_FACTS].view->buf;
    uint8_t *o = v[M_OUT].view->buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *r = base + sizeof(fact_row) * (size_t)i;
        unsigned proto = r[offsetof(fact_row, proto)];
        uint64_t k = flow_mix(addr_key(r, offsetof(fact_row, src)) * FLOW_M1 ^ addr_key(r, offsetof(fact_row, dst)));
        uint64_t ports = 0;
        if (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
            ports = (uint64_t)fact_u16(r, offsetof(fact_row, sport)) << 16 | fact_u16(r, offsetof(fact_row, dport));
        pmtu_row p;
        memset(&p, 0, sizeof p);
        p.key = to_le64(flow_mix(k ^ ((uint64_t)proto << 56 | ports)));
        p.frame = to_le64(fact_u64(r, offsetof(fact_row, frame)));
        p.seq = to_le32(proto == IPPROTO_TCP ? fact_u32(r, offsetof(fact_row, seq)) : 0);
        p.ip_len = to_le32(fact_u32(r, offsetof(fact_row, ip_len)));
        p.ipid = to_le16((uint16_t)fact_u16(r, offsetof(fact_row, ipid)));
        memcpy(o + sizeof(pmtu_row) * (size_t)i, &p, sizeof p);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_args(&c);
    return result;
}

const char pmtu_pack_doc[] =
"pmtu_pack(facts, out) -> None\n"
"\n"
"One 32-byte PMTU_DTYPE row per FACTS_DTYPE row (badsum.flows.pmtu): a directional 64-bit key of\n"
"addresses, protocol and (TCP, UDP) ports, frame, TCP sequence number (0 otherwise), IP length, IP id.";

