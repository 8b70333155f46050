/* Sequencer in C: the same behaviour and API as sfu.media.sequencer.Sequencer (the reference,
 * which documents the rules); tests/unit/test_sequencer.py runs against both. */
#include "fastpath.h"

#define SEQ_HALF 0x8000
#define TS_HALF 0x80000000u

static void start_source(fp_sequencer_t *s, uint16_t first_in_seq, uint32_t first_in_ts, uint64_t ts_gap)
{
    int64_t first_out_seq;
    uint32_t first_out_ts;
    if (s->sent_any) {
        first_out_seq = (int64_t)s->last_out_seq + 1;
        first_out_ts = (uint32_t)(s->last_out_ts + ts_gap);
    } else {
        first_out_seq = s->initial_seq;
        first_out_ts = s->initial_ts;
    }
    s->first_in_ext = first_in_seq;
    s->highest_in_ext = (int64_t)first_in_seq - 1;
    s->highest_in_seq = (uint16_t)(first_in_seq - 1);
    s->seq_offset = first_out_seq - first_in_seq;
    s->ts_offset = first_out_ts - first_in_ts;
    s->has_source = 1;
}

int fp_sequencer_map(fp_sequencer_t *s, uint16_t in_seq, uint32_t in_ts, uint16_t *out_seq, uint32_t *out_ts)
{
    if (!s->has_source)
        start_source(s, in_seq, in_ts, 1);
    int64_t delta = (uint16_t)(in_seq - s->highest_in_seq); /* RFC 1982 */
    if (delta >= SEQ_HALF)
        delta -= 0x10000;
    int64_t in_ext = s->highest_in_ext + delta;
    if (in_ext < s->first_in_ext)
        return 0; /* belongs to the previous source segment */
    uint16_t seq = (uint16_t)((uint64_t)(in_ext + s->seq_offset) & 0xFFFF);
    uint32_t ts = in_ts + s->ts_offset;
    if (delta > 0) {
        s->highest_in_ext = in_ext;
        s->highest_in_seq = in_seq;
        s->last_out_seq = seq;
    }
    if ((uint32_t)(ts - s->last_out_ts) < TS_HALF)
        s->last_out_ts = ts;
    s->sent_any = 1;
    *out_seq = seq;
    *out_ts = ts;
    return 1;
}

static int sequencer_init(fp_sequencer_t *s, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"initial_sequence_number", "initial_timestamp", NULL};
    unsigned long long seq, ts;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KK", keywords, &seq, &ts))
        return -1;
    s->initial_seq = (uint16_t)seq;
    s->initial_ts = (uint32_t)ts;
    s->has_source = s->sent_any = 0;
    s->first_in_ext = s->highest_in_ext = s->seq_offset = 0;
    s->highest_in_seq = 0;
    s->ts_offset = 0;
    s->last_out_seq = (uint16_t)(s->initial_seq - 1);
    s->last_out_ts = s->initial_ts;
    return 0;
}

static PyObject *sequencer_switch_source(fp_sequencer_t *s, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"first_in_seq", "first_in_ts", "ts_gap", NULL};
    unsigned long long seq, ts;
    long long gap;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKL", keywords, &seq, &ts, &gap))
        return NULL;
    if (gap <= 0)
        return PyErr_Format(PyExc_ValueError, "ts_gap must be positive, got %lld", gap);
    start_source(s, (uint16_t)seq, (uint32_t)ts, (uint64_t)gap);
    Py_RETURN_NONE;
}

static PyObject *sequencer_map(fp_sequencer_t *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "map() takes 2 arguments (%zd given)", nargs);
    unsigned long long seq = PyLong_AsUnsignedLongLongMask(args[0]);
    unsigned long long ts = PyLong_AsUnsignedLongLongMask(args[1]);
    if (PyErr_Occurred())
        return NULL;
    uint16_t out_seq;
    uint32_t out_ts;
    if (!fp_sequencer_map(s, (uint16_t)seq, (uint32_t)ts, &out_seq, &out_ts))
        Py_RETURN_NONE;
    return Py_BuildValue("(HI)", out_seq, out_ts);
}

static PyObject *sequencer_drop(fp_sequencer_t *s, PyObject *arg)
{
    unsigned long long seq = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred())
        return NULL;
    if (!s->has_source)
        Py_RETURN_NONE;
    uint16_t delta = (uint16_t)((uint16_t)seq - s->highest_in_seq);
    if (delta == 0 || delta >= SEQ_HALF)
        Py_RETURN_NONE;
    s->highest_in_ext += delta;
    s->highest_in_seq = (uint16_t)seq;
    s->seq_offset -= 1;
    Py_RETURN_NONE;
}

static PyObject *sequencer_last_seq(fp_sequencer_t *s, void *closure)
{
    return PyLong_FromUnsignedLong(s->last_out_seq);
}

static PyObject *sequencer_last_ts(fp_sequencer_t *s, void *closure)
{
    return PyLong_FromUnsignedLong(s->last_out_ts);
}

static PyMethodDef sequencer_methods[] = {
    {"switch_source", (PyCFunction)(void (*)(void))sequencer_switch_source, METH_VARARGS | METH_KEYWORDS,
     "switch_source(first_in_seq, first_in_ts, ts_gap): the next packet follows on from the last one sent"},
    {"map", (PyCFunction)(void (*)(void))sequencer_map, METH_FASTCALL,
     "map(in_seq, in_ts) -> (out_seq, out_ts) or None if the packet predates the current source"},
    {"drop", (PyCFunction)sequencer_drop, METH_O, "drop(in_seq): skip a packet; later ones shift down by one"},
    {NULL},
};

static PyGetSetDef sequencer_getset[] = {
    {"last_sequence_number", (getter)sequencer_last_seq, NULL, "highest outgoing sequence number sent", NULL},
    {"last_timestamp", (getter)sequencer_last_ts, NULL, "highest outgoing timestamp sent", NULL},
    {NULL},
};

PyTypeObject fp_sequencer_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastpath.Sequencer",
    .tp_doc = "Sequence-number and timestamp munging of one outgoing stream (C; see sfu.media.sequencer)",
    .tp_basicsize = sizeof(fp_sequencer_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sequencer_init,
    .tp_methods = sequencer_methods,
    .tp_getset = sequencer_getset,
};
