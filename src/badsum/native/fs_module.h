/*
 * The Python side of badsum.native._fastscan, shared by its units: how an entry point states its
 * arguments (one table, checked by one function in module.c), and the entry points themselves.
 * Include after <Python.h>.
 */
#ifndef BADSUM_FS_MODULE_H
#define BADSUM_FS_MODULE_H

#include "fs_common.h"

/* ---- arguments ---- */

typedef enum {
    ARG_BYTES, /* any contiguous bytes-like object, read only */
    ARG_INTS,  /* C-contiguous native integers of `size` bytes */
    ARG_ROWS,  /* C-contiguous records of `size` bytes (a numpy structured array, or raw bytes) */
    ARG_SSIZE, /* an int, as Py_ssize_t */
    ARG_U64,   /* a non-negative int */
    ARG_BOOL,  /* any object's truth */
} arg_kind;

enum {
    ARG_SIGNED = 1,     /* ARG_INTS: signed */
    ARG_WRITABLE = 2,   /* an output buffer */
    ARG_OPTIONAL = 4,   /* None is accepted: the view is NULL */
    ARG_PER_PACKET = 8, /* one item per packet: every such argument holds the same count */
};

typedef struct {
    const char *name;
    arg_kind kind;
    int size;        /* ARG_INTS: bytes per integer; ARG_ROWS: bytes per record */
    unsigned flags;  /* ARG_* bits */
    Py_ssize_t need; /* buffers: the exact item count required (0: any) */
    const char *dtype; /* ARG_ROWS: the numpy dtype's name, for messages */
} arg_spec;

typedef struct {
    Py_buffer *view;       /* buffers (NULL: an optional one was None) */
    Py_ssize_t items;      /* buffers: integers or records held */
    Py_ssize_t n;          /* ARG_SSIZE */
    unsigned long long u;  /* ARG_U64 */
    int flag;              /* ARG_BOOL */
} arg_val;

#define MAX_ARGS 16

/* The buffers an entry point holds; released by release_args whatever happened. */
typedef struct {
    const char *fname;
    Py_buffer views[MAX_ARGS];
    int held;
    arg_val v[MAX_ARGS];
    Py_ssize_t packets; /* the count of the ARG_PER_PACKET arguments (-1: none) */
} call_args;

/* Check `args` against spec[0..n) into `a`: 0, or -1 with TypeError or ValueError set naming the
 * argument. Buffers taken are released by release_args, also after a failure. */
int parse_args(PyObject *args, const char *fname, const arg_spec *spec, int n, call_args *a);
void release_args(call_args *a);

/* ---- the entry points (scan.c, facts.c, flowk.c) ---- */

PyObject *fastscan_scan(PyObject *self, PyObject *args);
PyObject *fastscan_facts(PyObject *self, PyObject *args);
PyObject *fastscan_flow_keys(PyObject *self, PyObject *args);
PyObject *fastscan_seg_match(PyObject *self, PyObject *args);
PyObject *fastscan_pair_count(PyObject *self, PyObject *args);
PyObject *fastscan_pmtu_pack(PyObject *self, PyObject *args);

extern const char scan_doc[], facts_doc[], flow_keys_doc[], seg_match_doc[], pair_count_doc[], pmtu_pack_doc[];

#endif
