/* module.c: the CPython binding of otlp_scan.c, importable as user_metrics.ingest._otlp_scan.
 *
 *   Table(keys, prefixes, like_prefixes, like_words) -> Table   (sequences of str; immutable)
 *   split(body, table, max_span_attributes) -> (candidates: bytes, plain: bytes, spans: int,
 *                                               plain_dropped_attributes: int)
 *
 * split raises ValueError when `body` is not a valid ExportTraceServiceRequest (the bodies upb's
 * FromString refuses) and MemoryError when its buffers cannot grow. The GIL is released while the
 * core reads `body`; the buffer export (Py_buffer) is held for that time, so a bytearray cannot be
 * resized under it. The Table is immutable, so any number of threads may split with it at once. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "otlp_scan.h"

typedef struct {
    PyObject_HEAD ots_table *table;
} TableObject;

static void table_dealloc(TableObject *self) {
    ots_table_free(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A sequence of str as UTF-8 views; the views point into the str objects, which `seq` keeps alive
 * (the fast sequence holds references). Returns -1 with an exception set. */
static int utf8_views(PyObject *arg, const char *what, PyObject **seq, ots_str **out, Py_ssize_t *n) {
    if (PyUnicode_Check(arg) || PyBytes_Check(arg)) { /* a sequence, but of characters */
        PyErr_Format(PyExc_TypeError, "%s: a sequence of str, not one string", what);
        return -1;
    }
    *seq = PySequence_Fast(arg, what);
    if (!*seq) return -1;
    *n = PySequence_Fast_GET_SIZE(*seq);
    *out = PyMem_Calloc(*n ? (size_t)*n : 1, sizeof(ots_str));
    if (!*out) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(*seq, i);
        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: every item must be a str", what);
            return -1;
        }
        Py_ssize_t len;
        const char *data = PyUnicode_AsUTF8AndSize(item, &len);
        if (!data) return -1;
        (*out)[i].data = data;
        (*out)[i].len = (size_t)len;
    }
    return 0;
}

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"keys", "prefixes", "like_prefixes", "like_words", NULL};
    PyObject *arg[4];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO:Table", names, &arg[0], &arg[1], &arg[2],
                                     &arg[3]))
        return NULL;
    PyObject *seq[4] = {NULL, NULL, NULL, NULL};
    ots_str *views[4] = {NULL, NULL, NULL, NULL};
    Py_ssize_t n[4] = {0, 0, 0, 0};
    TableObject *self = NULL;
    for (int i = 0; i < 4; i++)
        if (utf8_views(arg[i], names[i], &seq[i], &views[i], &n[i]) < 0) goto done;
    self = (TableObject *)type->tp_alloc(type, 0);
    if (!self) goto done;
    self->table = ots_table_new(views[0], (size_t)n[0], views[1], (size_t)n[1], views[2], (size_t)n[2],
                                views[3], (size_t)n[3]);
    if (!self->table) {
        Py_CLEAR(self);
        PyErr_NoMemory();
    }
done:
    for (int i = 0; i < 4; i++) {
        Py_XDECREF(seq[i]);
        PyMem_Free(views[i]);
    }
    return (PyObject *)self;
}

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "user_metrics.ingest._otlp_scan.Table",
    .tp_doc = PyDoc_STR("Table(keys, prefixes, like_prefixes, like_words): the compiled key table "
                        "split() classifies attribute keys with (immutable)."),
    .tp_basicsize = sizeof(TableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
};

static PyObject *split(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer body;
    PyObject *table;
    long long max_attributes;
    if (!PyArg_ParseTuple(args, "y*O!L:split", &body, &TableType, &table, &max_attributes)) return NULL;
    if (max_attributes < 0) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_ValueError, "max_span_attributes must be >= 0");
        return NULL;
    }
    ots_result result = {0};
    int status;
    Py_BEGIN_ALLOW_THREADS status = ots_split((const uint8_t *)body.buf, (size_t)body.len,
                                              ((TableObject *)table)->table,
                                              (uint64_t)max_attributes, &result);
    Py_END_ALLOW_THREADS PyBuffer_Release(&body);
    PyObject *out = NULL;
    if (status == OTS_OK) {
        /* y# turns a NULL pointer into None: an empty output may have no buffer */
        static const char empty[1] = {0};
        const char *cand = result.candidates.data ? (const char *)result.candidates.data : empty;
        const char *plain = result.plain.data ? (const char *)result.plain.data : empty;
        out = Py_BuildValue("(y#y#KK)", cand, (Py_ssize_t)result.candidates.len, plain,
                            (Py_ssize_t)result.plain.len, (unsigned long long)result.spans,
                            (unsigned long long)result.plain_dropped);
    } else if (status == OTS_INVALID) {
        PyErr_Format(PyExc_ValueError, "invalid ExportTraceServiceRequest: %s at byte %zu", result.error,
                     result.error_offset);
    } else {
        PyErr_NoMemory();
    }
    ots_result_free(&result);
    return out;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     PyDoc_STR("split(body, table, max_span_attributes) -> (candidates, plain, spans, "
               "plain_dropped_attributes); ValueError when body is not a valid request.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "user_metrics.ingest._otlp_scan",
    .m_doc = PyDoc_STR("The native split of OTLP trace requests (see native/otlp_scan.c)."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__otlp_scan(void) {
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "PLAIN_RECORD_SIZE", OTS_PLAIN_RECORD) < 0 ||
        PyModule_AddIntConstant(m, "MAX_LEVEL", OTS_MAX_LEVEL) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
