/*
 * Record framing for pcap and pcapng: the per-record loop of the capture reader.
 *
 * Python reads a chunk of the (decompressed) file into a buffer and calls these functions to
 * locate every complete record in it. They write one row per packet into caller-provided arrays
 * (numpy arrays, reached only through the buffer protocol) and stop at the first thing they do
 * not handle themselves: the end of the data, a full output array, a pcapng block other than a
 * packet block, or damage. Python handles that case and calls again, so that everything rare
 * (section and interface blocks, error messages) stays in Python and everything per packet
 * stays here, with the GIL released.
 *
 * Every read is bounds-checked against `end`; lengths are validated before they are used to
 * advance, so damaged input can only stop the walk, never overrun or loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

/* Why a walk stopped (returned as `status`; `detail` adds the number that explains it). */
enum {
    ST_NEED_MORE = 1,        /* partial record at pos; detail = bytes needed from pos */
    ST_FULL = 2,             /* output arrays full */
    ST_BLOCK = 3,            /* pcapng: complete, well-framed non-packet block at pos; detail = type */
    ST_SHB = 4,              /* pcapng: section header block at pos (not validated: Python does it) */
    ST_TOO_LARGE = 10,       /* detail = claimed caplen (pcap) or block length (pcapng) */
    ST_BAD_LENGTH = 11,      /* pcapng block length < minimum or not a multiple of 4; detail = length */
    ST_LENGTH_MISMATCH = 12, /* pcapng trailing block length differs; detail = trailing length */
    ST_BAD_CAPLEN = 13,      /* pcapng caplen exceeds the block; detail = caplen */
    ST_UNDEFINED_INTERFACE = 14, /* pcapng packet names an interface with no IDB; detail = id */
};

#define BT_PB 0x00000002u
#define BT_SPB 0x00000003u
#define BT_EPB 0x00000006u
#define BT_SHB 0x0A0D0D0Au
#define NO_TP_STATUS 0xFFFFFFFFu

static const char TP_PREFIX[] = "badsum:tp_status=0x";
#define TP_PREFIX_LEN (sizeof(TP_PREFIX) - 1)

static inline uint16_t rd16(const uint8_t *p, int sw) {
    uint16_t v;
    memcpy(&v, p, 2);
    return sw ? __builtin_bswap16(v) : v;
}

static inline uint32_t rd32(const uint8_t *p, int sw) {
    uint32_t v;
    memcpy(&v, p, 4);
    return sw ? __builtin_bswap32(v) : v;
}

/* pcapng output is little-endian whatever the host. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE32(x) __builtin_bswap32(x)
#else
#define LE32(x) (x)
#endif

/*
 * A record's header is found only by reading the one before it, so the walk is a chain of loads
 * that each wait on memory (perf: nine tenths of frame_pcap's time on the caplen load). Records lie
 * one after another, so the bytes ahead are the ones it will need: prefetch every cache line up to
 * FRAME_AHEAD bytes past the record being read. The checksum scan reads the same bytes right after
 * (a chunk is a few megabytes), so it finds them in cache too.
 */
#define FRAME_AHEAD 8192
#define LINE 64

static inline void prefetch_to(const uint8_t **next, const uint8_t *want)
{
    for (const uint8_t *p = *next; p < want; p += LINE)
        __builtin_prefetch(p);
    if (*next < want)
        *next = want;
}

#define PUT(arr, idx, type, val)                                                                   \
    do {                                                                                           \
        type v_ = (type)(val);                                                                     \
        memcpy((char *)(arr) + (size_t)(idx) * sizeof(type), &v_, sizeof(type));                 \
    } while (0)

/* Output arrays of one walk: element sizes are checked against the buffers' byte lengths. */
typedef struct {
    Py_buffer b;
    Py_ssize_t itemsize;
} Out;

static Py_ssize_t capacity_of(Out *outs, int n) {
    Py_ssize_t cap = PY_SSIZE_T_MAX;
    for (int i = 0; i < n; i++) {
        Py_ssize_t c = outs[i].b.len / outs[i].itemsize;
        if (c < cap) cap = c;
    }
    return cap;
}

static void release_all(Py_buffer *buf, Out *outs, int n) {
    if (buf) PyBuffer_Release(buf);
    for (int i = 0; i < n; i++) {
        if (outs[i].b.obj) PyBuffer_Release(&outs[i].b);
    }
}

static int check_range(Py_ssize_t start, Py_ssize_t end, Py_ssize_t len) {
    if (start < 0 || end < start || end > len) {
        PyErr_SetString(PyExc_ValueError, "start/end outside the buffer");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(frame_pcap_doc,
"frame_pcap(buf, start, end, swapped, nsec, hdr_len, max_caplen, base, out_index,\n"
"           out_offset, out_caplen, out_origlen, out_ts_ns, out_file_offset)\n"
"-> (count, next_pos, status, detail)\n\n"
"Frame consecutive pcap records in buf[start:end]. Rows are written from out_index on;\n"
"count is the new number of rows. file offsets are base + record position.");

static PyObject *frame_pcap(PyObject *self, PyObject *args) {
    Py_buffer buf = {0};
    Out o[5] = {{{0}, 8}, {{0}, 4}, {{0}, 4}, {{0}, 8}, {{0}, 8}};
    Py_ssize_t start, end, out_index;
    int swapped, nsec, hdr_len;
    unsigned long long max_caplen;
    long long base;
    if (!PyArg_ParseTuple(args, "y*nnppiKLnw*w*w*w*w*", &buf, &start, &end, &swapped, &nsec,
                          &hdr_len, &max_caplen, &base, &out_index, &o[0].b, &o[1].b, &o[2].b,
                          &o[3].b, &o[4].b))
        return NULL;
    if (check_range(start, end, buf.len) < 0 || (hdr_len != 16 && hdr_len != 24)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "hdr_len must be 16 or 24");
        release_all(&buf, o, 5);
        return NULL;
    }
    Py_ssize_t cap = capacity_of(o, 5);
    if (out_index < 0 || out_index > cap) {
        PyErr_SetString(PyExc_ValueError, "out_index outside the output arrays");
        release_all(&buf, o, 5);
        return NULL;
    }
    const uint8_t *b = (const uint8_t *)buf.buf;
    Py_ssize_t pos = start, n = out_index;
    int status;
    unsigned long long detail = 0;
    const uint64_t frac_mul = nsec ? 1 : 1000;
    const uint8_t *ahead = b + pos, *last = b + end;

    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        prefetch_to(&ahead, end - pos > FRAME_AHEAD ? b + pos + FRAME_AHEAD : last);
        if (end - pos < hdr_len) {
            status = ST_NEED_MORE;
            detail = (unsigned long long)hdr_len;
            break;
        }
        const uint8_t *h = b + pos;
        uint32_t caplen = rd32(h + 8, swapped);
        if (caplen > max_caplen) {
            status = ST_TOO_LARGE;
            detail = caplen;
            break;
        }
        uint64_t total = (uint64_t)hdr_len + caplen;
        if ((uint64_t)(end - pos) < total) {
            status = ST_NEED_MORE;
            detail = total;
            break;
        }
        if (n >= cap) {
            status = ST_FULL;
            break;
        }
        uint64_t ts = (uint64_t)rd32(h, swapped) * 1000000000ull +
                      (uint64_t)rd32(h + 4, swapped) * frac_mul;
        PUT(o[0].b.buf, n, int64_t, pos + hdr_len);
        PUT(o[1].b.buf, n, uint32_t, caplen);
        PUT(o[2].b.buf, n, uint32_t, rd32(h + 12, swapped));
        PUT(o[3].b.buf, n, int64_t, (int64_t)ts);
        PUT(o[4].b.buf, n, int64_t, base + pos);
        n++;
        pos += (Py_ssize_t)total;
    }
    Py_END_ALLOW_THREADS

    release_all(&buf, o, 5);
    return Py_BuildValue("nniK", n, pos, status, detail);
}

/* Per-interface timestamp conversion, precomputed from if_tsresol / if_tsoffset. */
enum { TS_MUL, TS_DIV, TS_POW2, TS_ZERO };
typedef struct {
    uint32_t linktype;
    uint32_t snaplen;
    int mode;
    int shift;         /* TS_POW2: units of 2^-shift s */
    uint64_t factor;   /* TS_MUL / TS_DIV: power of ten between the unit and a nanosecond */
    int64_t offset_ns; /* if_tsoffset in nanoseconds */
} Iface;

static void iface_init(Iface *f, const int64_t row[4]) {
    uint8_t r = (uint8_t)row[2];
    f->linktype = (uint32_t)row[0];
    f->snaplen = (uint32_t)row[1];
    f->offset_ns = (int64_t)((uint64_t)row[3] * 1000000000ull);
    f->shift = r & 0x7f;
    f->factor = 1;
    if (r & 0x80) {
        f->mode = TS_POW2;
    } else if (r <= 9) {
        f->mode = TS_MUL;
        for (int i = r; i < 9; i++) f->factor *= 10;
    } else if (r - 9 <= 19) { /* 10^19 still fits in 64 bits */
        f->mode = TS_DIV;
        for (int i = 9; i < r; i++) f->factor *= 10;
    } else {
        f->mode = TS_ZERO;
    }
}

static inline int64_t ticks_to_ns(const Iface *f, uint64_t t) {
    uint64_t ns;
    switch (f->mode) {
    case TS_MUL: ns = t * f->factor; break; /* wraps on absurd values; never traps */
    case TS_DIV: ns = t / f->factor; break;
    case TS_POW2:
#ifdef __SIZEOF_INT128__
        ns = (uint64_t)(((unsigned __int128)t * 1000000000u) >> f->shift);
#else
        ns = (uint64_t)((long double)t * 1e9L / powl(2.0L, f->shift));
#endif
        break;
    default: ns = 0;
    }
    return (int64_t)(ns + (uint64_t)f->offset_ns);
}

/* Read epb_flags (direction) and the badsum tp_status comment; count comments. Malformed
 * options end the walk quietly: the packet itself is intact. */
static void scan_options(const uint8_t *p, const uint8_t *e, int sw, uint8_t *dir,
                         uint32_t *tp_status, uint16_t *ncomments) {
    while (e - p >= 4) {
        uint16_t code = rd16(p, sw), len = rd16(p + 2, sw);
        if (code == 0) break;
        size_t room = (size_t)(e - p - 4);
        if (len > room) break;
        const uint8_t *v = p + 4;
        if (code == 2 && len >= 4) {
            uint32_t d = rd32(v, sw) & 3u;
            *dir = (uint8_t)(d == 3 ? 0 : d);
        } else if (code == 1) {
            if (*ncomments < 0xFFFF) (*ncomments)++;
            if (*tp_status == NO_TP_STATUS && len > TP_PREFIX_LEN &&
                memcmp(v, TP_PREFIX, TP_PREFIX_LEN) == 0) {
                uint32_t val = 0;
                size_t i = TP_PREFIX_LEN, digits = 0;
                for (; i < len; i++) {
                    uint8_t c = v[i];
                    int x = (c >= '0' && c <= '9') ? c - '0'
                            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                            : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
                    if (x < 0) break;
                    val = (val << 4) | (uint32_t)x;
                    digits++;
                }
                if (digits >= 1 && digits <= 8) *tp_status = val;
            }
        }
        size_t padded = ((size_t)len + 3u) & ~(size_t)3u;
        if (padded > room) break;
        p = v + padded;
    }
}

PyDoc_STRVAR(frame_pcapng_doc,
"frame_pcapng(buf, start, end, swapped, ifaces, if_base, max_block, base, out_index,\n"
"             out_offset, out_caplen, out_origlen, out_ts_ns, out_file_offset,\n"
"             out_interface, out_linktype, out_tp_status, out_direction, out_ncomments)\n"
"-> (count, next_pos, status, detail)\n\n"
"Frame consecutive EPB/SPB/PB blocks of one section. ifaces is int64[k*4]: linktype,\n"
"snaplen, if_tsresol, if_tsoffset per section-local interface; if_base makes ids global.");

static PyObject *frame_pcapng(PyObject *self, PyObject *args) {
    Py_buffer buf = {0}, ifb = {0};
    Out o[10] = {{{0}, 8}, {{0}, 4}, {{0}, 4}, {{0}, 8}, {{0}, 8},
                 {{0}, 4}, {{0}, 2}, {{0}, 4}, {{0}, 1}, {{0}, 2}};
    Py_ssize_t start, end, out_index;
    int swapped;
    long long if_base, base;
    unsigned long long max_block;
    if (!PyArg_ParseTuple(args, "y*nnpy*LKLnw*w*w*w*w*w*w*w*w*w*", &buf, &start, &end, &swapped,
                          &ifb, &if_base, &max_block, &base, &out_index, &o[0].b, &o[1].b,
                          &o[2].b, &o[3].b, &o[4].b, &o[5].b, &o[6].b, &o[7].b, &o[8].b, &o[9].b))
        return NULL;
    if (check_range(start, end, buf.len) < 0 || ifb.len % 32 != 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "ifaces must be int64[k*4]");
        PyBuffer_Release(&ifb);
        release_all(&buf, o, 10);
        return NULL;
    }
    Py_ssize_t cap = capacity_of(o, 10);
    if (out_index < 0 || out_index > cap) {
        PyErr_SetString(PyExc_ValueError, "out_index outside the output arrays");
        PyBuffer_Release(&ifb);
        release_all(&buf, o, 10);
        return NULL;
    }
    Py_ssize_t nif = ifb.len / 32;
    Iface *ifs = PyMem_Malloc(sizeof(Iface) * (size_t)(nif ? nif : 1));
    if (!ifs) {
        PyBuffer_Release(&ifb);
        release_all(&buf, o, 10);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nif; i++) {
        int64_t row[4];
        memcpy(row, (const char *)ifb.buf + i * 32, 32);
        iface_init(&ifs[i], row);
    }
    PyBuffer_Release(&ifb);

    const uint8_t *b = (const uint8_t *)buf.buf;
    Py_ssize_t pos = start, n = out_index;
    int status;
    unsigned long long detail = 0;
    const uint8_t *ahead = b + pos, *last = b + end;

    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        prefetch_to(&ahead, end - pos > FRAME_AHEAD ? b + pos + FRAME_AHEAD : last);
        if (end - pos < 12) {
            status = ST_NEED_MORE;
            detail = 12;
            break;
        }
        const uint8_t *h = b + pos;
        uint32_t type = rd32(h, swapped);
        if (type == BT_SHB) { /* its length is in the new section's byte order */
            status = ST_SHB;
            detail = type;
            break;
        }
        uint32_t len = rd32(h + 4, swapped);
        if (len < 12 || (len & 3u)) {
            status = ST_BAD_LENGTH;
            detail = len;
            break;
        }
        if (len > max_block) {
            status = ST_TOO_LARGE;
            detail = len;
            break;
        }
        if ((uint64_t)(end - pos) < len) {
            status = ST_NEED_MORE;
            detail = len;
            break;
        }
        uint32_t trailer = rd32(h + len - 4, swapped);
        if (trailer != len) {
            status = ST_LENGTH_MISMATCH;
            detail = trailer;
            break;
        }
        if (type != BT_EPB && type != BT_SPB && type != BT_PB) {
            status = ST_BLOCK;
            detail = type;
            break;
        }
        uint32_t iface, caplen, origlen, opt_start = 0;
        uint64_t ticks = 0;
        if (type == BT_SPB) {
            if (len < 16) {
                status = ST_BAD_LENGTH;
                detail = len;
                break;
            }
            iface = 0;
            origlen = rd32(h + 8, swapped);
            caplen = origlen;
            if (caplen > len - 16) caplen = len - 16;
        } else {
            if (len < 32) {
                status = ST_BAD_LENGTH;
                detail = len;
                break;
            }
            iface = type == BT_EPB ? rd32(h + 8, swapped) : rd16(h + 8, swapped);
            ticks = ((uint64_t)rd32(h + 12, swapped) << 32) | rd32(h + 16, swapped);
            caplen = rd32(h + 20, swapped);
            origlen = rd32(h + 24, swapped);
            if (caplen > len - 32) {
                status = ST_BAD_CAPLEN;
                detail = caplen;
                break;
            }
            opt_start = 28 + ((caplen + 3u) & ~3u);
        }
        if ((Py_ssize_t)iface >= nif) {
            status = ST_UNDEFINED_INTERFACE;
            detail = iface;
            break;
        }
        if (n >= cap) {
            status = ST_FULL;
            break;
        }
        const Iface *f = &ifs[iface];
        uint8_t dir = 0;
        uint32_t tp_status = NO_TP_STATUS;
        uint16_t ncomments = 0;
        if (type == BT_SPB) {
            if (f->snaplen && caplen > f->snaplen) caplen = f->snaplen;
            PUT(o[0].b.buf, n, int64_t, pos + 12);
            PUT(o[3].b.buf, n, int64_t, 0); /* an SPB has no timestamp */
        } else {
            if (opt_start + 4 < len)
                scan_options(h + opt_start, h + len - 4, swapped, &dir, &tp_status, &ncomments);
            PUT(o[0].b.buf, n, int64_t, pos + 28);
            PUT(o[3].b.buf, n, int64_t, ticks_to_ns(f, ticks));
        }
        PUT(o[1].b.buf, n, uint32_t, caplen);
        PUT(o[2].b.buf, n, uint32_t, origlen);
        PUT(o[4].b.buf, n, int64_t, base + pos);
        PUT(o[5].b.buf, n, uint32_t, (uint64_t)if_base + iface);
        PUT(o[6].b.buf, n, uint16_t, f->linktype);
        PUT(o[7].b.buf, n, uint32_t, tp_status);
        PUT(o[8].b.buf, n, uint8_t, dir);
        PUT(o[9].b.buf, n, uint16_t, ncomments);
        n++;
        pos += len;
    }
    Py_END_ALLOW_THREADS

    PyMem_Free(ifs);
    release_all(&buf, o, 10);
    return Py_BuildValue("nniK", n, pos, status, detail);
}

PyDoc_STRVAR(epb_comments_doc,
"epb_comments(buf, pos, swapped) -> list[str]\n\n"
"The opt_comment strings of the EPB or PB at buf[pos] (already validated by frame_pcapng).\n"
"Invalid UTF-8 is replaced; a trailing NUL some writers add is dropped.");

static PyObject *epb_comments(PyObject *self, PyObject *args) {
    Py_buffer buf = {0};
    Py_ssize_t pos;
    int swapped;
    if (!PyArg_ParseTuple(args, "y*np", &buf, &pos, &swapped)) return NULL;
    PyObject *list = PyList_New(0);
    if (!list) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    const uint8_t *b = (const uint8_t *)buf.buf;
    if (pos < 0 || buf.len - pos < 32) goto done;
    uint32_t type = rd32(b + pos, swapped), len = rd32(b + pos + 4, swapped);
    if ((type != BT_EPB && type != BT_PB) || len < 32 || (uint64_t)(buf.len - pos) < len) goto done;
    uint32_t caplen = rd32(b + pos + 20, swapped);
    if (caplen > len - 32) goto done;
    const uint8_t *p = b + pos + 28 + ((caplen + 3u) & ~3u), *e = b + pos + len - 4;
    while (e - p >= 4) {
        uint16_t code = rd16(p, swapped), olen = rd16(p + 2, swapped);
        if (code == 0) break;
        size_t room = (size_t)(e - p - 4);
        if (olen > room) break;
        if (code == 1) {
            Py_ssize_t l = olen;
            while (l > 0 && p[4 + l - 1] == 0) l--;
            PyObject *s = PyUnicode_DecodeUTF8((const char *)p + 4, l, "replace");
            if (!s || PyList_Append(list, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(list);
                PyBuffer_Release(&buf);
                return NULL;
            }
            Py_DECREF(s);
        }
        size_t padded = ((size_t)olen + 3u) & ~(size_t)3u;
        if (padded > room) break;
        p += 4 + padded;
    }
done:
    PyBuffer_Release(&buf);
    return list;
}

PyDoc_STRVAR(encode_epbs_doc,
"encode_epbs(buf, offset, caplen, origlen, ts_ns, idb, direction, options) -> bytes\n\n"
"Little-endian EPBs (if_tsresol 9) for packets i of buf, one per row of the arrays\n"
"(int64, uint32, uint32, int64, uint32, uint8). options[i] is None or the packet's encoded\n"
"options (ending with opt_endofopt); for None, a direction of 1/2 becomes epb_flags.");

static PyObject *encode_epbs(PyObject *self, PyObject *args) {
    Py_buffer buf = {0};
    Out in[6] = {{{0}, 8}, {{0}, 4}, {{0}, 4}, {{0}, 8}, {{0}, 4}, {{0}, 1}};
    PyObject *options;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*O!", &buf, &in[0].b, &in[1].b, &in[2].b, &in[3].b,
                          &in[4].b, &in[5].b, &PyList_Type, &options))
        return NULL;
    Py_ssize_t n = capacity_of(in, 6);
    const char **opt = NULL;
    Py_ssize_t *optlen = NULL;
    PyObject *out = NULL;
    if (PyList_GET_SIZE(options) != n) {
        PyErr_SetString(PyExc_ValueError, "options must have one entry per packet");
        goto done;
    }
    opt = PyMem_Calloc((size_t)(n ? n : 1), sizeof(*opt));
    optlen = PyMem_Calloc((size_t)(n ? n : 1), sizeof(*optlen));
    if (!opt || !optlen) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* sizes and checks, with the GIL */
        int64_t off;
        uint32_t cap;
        memcpy(&off, (char *)in[0].b.buf + i * 8, 8);
        memcpy(&cap, (char *)in[1].b.buf + i * 4, 4);
        if (off < 0 || off > buf.len || (Py_ssize_t)cap > buf.len - off) {
            PyErr_SetString(PyExc_ValueError, "a packet lies outside the buffer");
            goto done;
        }
        PyObject *o = PyList_GET_ITEM(options, i);
        if (o != Py_None) {
            if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) % 4) {
                PyErr_SetString(PyExc_TypeError, "options must be None or bytes of 4-byte units");
                goto done;
            }
            opt[i] = PyBytes_AS_STRING(o);
            optlen[i] = PyBytes_GET_SIZE(o);
        } else {
            uint8_t d = ((const uint8_t *)in[5].b.buf)[i];
            optlen[i] = (d == 1 || d == 2) ? 12 : 0;
        }
        total += 32 + ((cap + 3) & ~3u) + optlen[i];
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (!out) goto done;
    char *w = PyBytes_AS_STRING(out);
    const char *src = (const char *)buf.buf;
    Py_BEGIN_ALLOW_THREADS /* `out` is not visible to anyone else yet */
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t off, ts;
        uint32_t cap, orig, idb, h[7];
        memcpy(&off, (char *)in[0].b.buf + i * 8, 8);
        memcpy(&cap, (char *)in[1].b.buf + i * 4, 4);
        memcpy(&orig, (char *)in[2].b.buf + i * 4, 4);
        memcpy(&ts, (char *)in[3].b.buf + i * 8, 8);
        memcpy(&idb, (char *)in[4].b.buf + i * 4, 4);
        uint32_t padded = (cap + 3) & ~3u, len = 32 + padded + (uint32_t)optlen[i];
        uint64_t t = (uint64_t)ts;
        h[0] = 6; h[1] = len; h[2] = idb; h[3] = (uint32_t)(t >> 32); h[4] = (uint32_t)t;
        h[5] = cap; h[6] = orig;
        for (int k = 0; k < 7; k++) h[k] = LE32(h[k]);
        memcpy(w, h, 28);
        memcpy(w + 28, src + off, cap);
        memset(w + 28 + cap, 0, padded - cap);
        w += 28 + padded;
        if (opt[i]) {
            memcpy(w, opt[i], (size_t)optlen[i]);
        } else if (optlen[i]) { /* epb_flags = direction, then opt_endofopt */
            uint32_t f[3] = {LE32(2u | (4u << 16)), LE32(((const uint8_t *)in[5].b.buf)[i]), 0};
            memcpy(w, f, 12);
        }
        w += optlen[i];
        uint32_t tl = LE32(len);
        memcpy(w, &tl, 4);
        w += 4;
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_Free(opt);
    PyMem_Free(optlen);
    release_all(&buf, in, 6);
    return out;
}

static PyMethodDef methods[] = {
    {"frame_pcap", frame_pcap, METH_VARARGS, frame_pcap_doc},
    {"frame_pcapng", frame_pcapng, METH_VARARGS, frame_pcapng_doc},
    {"epb_comments", epb_comments, METH_VARARGS, epb_comments_doc},
    {"encode_epbs", encode_epbs, METH_VARARGS, encode_epbs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_framing",
    "pcap/pcapng record framing in C (buffer protocol only; releases the GIL).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__framing(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    struct {
        const char *name;
        long value;
    } consts[] = {
        {"NEED_MORE", ST_NEED_MORE}, {"FULL", ST_FULL}, {"BLOCK", ST_BLOCK}, {"SHB", ST_SHB},
        {"TOO_LARGE", ST_TOO_LARGE}, {"BAD_LENGTH", ST_BAD_LENGTH},
        {"LENGTH_MISMATCH", ST_LENGTH_MISMATCH}, {"BAD_CAPLEN", ST_BAD_CAPLEN},
        {"UNDEFINED_INTERFACE", ST_UNDEFINED_INTERFACE},
    };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
