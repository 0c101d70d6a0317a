/*
 * badsum.native._fastscan: the module. Its kernels live in scan.c (checksum scan), facts.c
 * (packet facts) and flowk.c (flow-detector kernels); this unit holds the method table, the
 * constants Python compares with its own (tests/native), and the one argument checker every
 * entry point states its arguments to.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fs_module.h"

/* Does a struct-module format describe a native-order integer of this signedness? */
static int int_format_ok(const char *fmt, int is_signed)
{
    if (fmt == NULL)
        return !is_signed; /* unformatted: bytes; the caller checks itemsize */
    if (*fmt == '@' || *fmt == '=' || *fmt == (HOST_BIG_ENDIAN ? '>' : '<') ||
        (HOST_BIG_ENDIAN && *fmt == '!'))
        fmt++;
    if (fmt[0] == '\0' || fmt[1] != '\0')
        return 0;
    return strchr(is_signed ? "bhilq" : "BHILQ", fmt[0]) != NULL;
}

/* One buffer argument: taken, its layout checked, its item count in v->items. */
static int get_buffer(call_args *a, PyObject *obj, const arg_spec *s, arg_val *v)
{
    if ((s->flags & ARG_OPTIONAL) && obj == Py_None) {
        v->view = NULL;
        return 0;
    }
    int writable = (s->flags & ARG_WRITABLE) != 0;
    Py_buffer *b = &a->views[a->held];
    if (s->kind == ARG_BYTES) {
        if (PyObject_GetBuffer(obj, b, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a contiguous bytes-like object (got %.100s)", s->name,
                         Py_TYPE(obj)->tp_name);
            return -1;
        }
        a->held++;
        v->view = b;
        v->items = b->len;
        return 0;
    }
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0) | (s->kind == ARG_INTS ? PyBUF_FORMAT : 0);
    if (PyObject_GetBuffer(obj, b, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %sC-contiguous buffer (got %.100s)", s->name,
                     writable ? "writable " : "", Py_TYPE(obj)->tp_name);
        return -1;
    }
    a->held++;
    v->view = b;
    if (s->kind == ARG_INTS) {
        int is_signed = (s->flags & ARG_SIGNED) != 0;
        if (b->itemsize != s->size || !int_format_ok(b->format, is_signed)) {
            PyErr_Format(PyExc_TypeError, "%s must hold %s%d-bit integers (got format '%s', itemsize %zd)", s->name,
                         is_signed ? "signed " : "unsigned ", s->size * 8, b->format ? b->format : "B", b->itemsize);
            return -1;
        }
    } else if ((b->itemsize != 1 && b->itemsize != s->size) || b->len % s->size != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be an array of %d-byte %s rows", s->name, s->size, s->dtype);
        return -1;
    }
    v->items = b->len / s->size;
    if (s->need && v->items != s->need) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd entries (got %zd)", s->name, s->need, v->items);
        return -1;
    }
    return 0;
}

int parse_args(PyObject *args, const char *fname, const arg_spec *spec, int n, call_args *a)
{
    a->fname = fname;
    a->held = 0;
    a->packets = -1;
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != n) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %d arguments (%zd given)", fname, n,
                     PyTuple_Check(args) ? PyTuple_GET_SIZE(args) : (Py_ssize_t)0);
        return -1;
    }
    int first_per_packet = -1;
    for (int i = 0; i < n; i++) {
        PyObject *obj = PyTuple_GET_ITEM(args, i);
        const arg_spec *s = &spec[i];
        arg_val *v = &a->v[i];
        memset(v, 0, sizeof *v);
        switch (s->kind) {
        case ARG_SSIZE:
            v->n = PyLong_AsSsize_t(obj);
            if (v->n == -1 && PyErr_Occurred())
                return -1;
            continue;
        case ARG_U64:
            v->u = PyLong_AsUnsignedLongLong(obj);
            if (v->u == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "%s must be a non-negative int", s->name);
                return -1;
            }
            continue;
        case ARG_BOOL:
            v->flag = PyObject_IsTrue(obj);
            if (v->flag < 0)
                return -1;
            continue;
        default:
            if (get_buffer(a, obj, s, v) < 0)
                return -1;
        }
        if ((s->flags & ARG_PER_PACKET) && v->view != NULL) {
            if (first_per_packet < 0) {
                first_per_packet = i;
                a->packets = v->items;
            } else if (v->items != a->packets) {
                PyErr_Format(PyExc_ValueError, "%s and %s must have the same length, one entry per packet (%zd, %zd)",
                             spec[first_per_packet].name, s->name, a->packets, v->items);
                return -1;
            }
        }
    }
    if (a->packets > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a batch holds at most 2**32-1 packets");
        return -1;
    }
    return 0;
}

void release_args(call_args *a)
{
    while (a->held > 0)
        PyBuffer_Release(&a->views[--a->held]);
}

#ifdef FS_WIDE_SUM
int fs_have_avx2 = 0;
#endif

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
    PyModuleDef_HEAD_INIT, "_fastscan", "The checksum scan, packet facts and flow kernels of badsum's fast path.", -1,
    fastscan_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastscan(void)
{
    PyObject *m = PyModule_Create(&fastscan_module);
    if (m == NULL)
        return NULL;
#ifdef FS_WIDE_SUM
    __builtin_cpu_init();
    fs_have_avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    /* Sizes and limits the Python side states too: tests/native compares every one. */
    static const struct {
        const char *name;
        long value;
    } consts[] = {
        {"MAX_ROWS_PER_PACKET", ROWS_MAX},
        {"ISSUE_SIZE", (long)sizeof(issue_row)},
        {"FACT_SIZE", (long)sizeof(fact_row)},
        {"MAX_DEPTH", MAX_DEPTH},
        {"N_LAYERS", N_LAYERS},
        {"N_STATUS", N_STATUS},
        {"MAX_VLAN_TAGS", MAX_VLAN_TAGS},
        {"SCAN_VLAN_TAGS", SCAN_VLAN_TAGS},
        {"MAX_IPV6_EXT_HEADERS", MAX_IPV6_EXT_HEADERS},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
