/* Lane: what the fan-out needs of one downtrack, without attribute lookups per packet.
 *
 * sfu.media.downtrack.DownTrack keeps it in step (`_sync_lane`): `relay` is the relay the downtrack
 * forwards from in the steady state (None while gated, switching, paused, munging or closed),
 * `pt_map` and `rewriter` its negotiated parameters. The outgoing stream's sequencer, NACK cache
 * lists and SSRC are read once here: they are fixed for the life of a sfu.media.downtrack.OutStream.
 * `packets_sent` and `bytes_sent` are the downtrack's counters (both paths add to them). */
#include "fastpath.h"

#include <structmember.h>

/* Tally: what an outgoing stream sent since its last sender-report update (OutStream.tally). */
static PyMemberDef tally_members[] = {
    {"unreported_packets", T_LONGLONG, offsetof(fp_tally_t, packets), 0, "packets not passed to on_sent yet"},
    {"unreported_bytes", T_LONGLONG, offsetof(fp_tally_t, bytes), 0, "their payload bytes"},
    {NULL},
};

PyTypeObject fp_tally_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastpath.Tally",
    .tp_doc = "Packets and payload bytes sent since the last sender-report update",
    .tp_basicsize = sizeof(fp_tally_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_members = tally_members,
};

static int lane_init(fp_lane_t *lane, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"out", "report_every_packet", NULL};
    PyObject *out;
    int every;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Op", keywords, &out, &every))
        return -1;
    PyObject *seqr = PyObject_GetAttr(out, fp_names.sequencer);
    PyObject *cache = PyObject_GetAttr(out, fp_names.cache);
    PyObject *ssrc = PyObject_GetAttr(out, fp_names.ssrc);
    PyObject *tally = PyObject_GetAttr(out, fp_names.tally);
    PyObject *mask = cache ? PyObject_GetAttr(cache, fp_names.mask) : NULL;
    PyObject *seqs = cache ? PyObject_GetAttr(cache, fp_names.sequence_numbers) : NULL;
    PyObject *packets = cache ? PyObject_GetAttr(cache, fp_names.packets) : NULL;
    int rc = -1;
    if (seqr == NULL || ssrc == NULL || tally == NULL || mask == NULL || seqs == NULL || packets == NULL)
        goto done;
    if (Py_TYPE(seqr) != &fp_sequencer_type || Py_TYPE(tally) != &fp_tally_type || !PyList_CheckExact(seqs)
        || !PyList_CheckExact(packets)) {
        PyErr_SetString(PyExc_TypeError, "Lane needs a C Sequencer, a C Tally and a PacketCache");
        goto done;
    }
    size_t mask_value = PyLong_AsSize_t(mask);
    unsigned long ssrc_value = PyLong_AsUnsignedLongMask(ssrc);
    if (PyErr_Occurred())
        goto done;
    if ((Py_ssize_t)mask_value >= PyList_GET_SIZE(seqs) || (Py_ssize_t)mask_value >= PyList_GET_SIZE(packets)) {
        PyErr_SetString(PyExc_ValueError, "PacketCache lists shorter than its mask");
        goto done;
    }
    Py_XSETREF(lane->out, Py_NewRef(out));
    Py_XSETREF(lane->sequencer, Py_NewRef(seqr));
    Py_XSETREF(lane->tally, Py_NewRef(tally));
    Py_XSETREF(lane->cache_seqs, Py_NewRef(seqs));
    Py_XSETREF(lane->cache_packets, Py_NewRef(packets));
    Py_XSETREF(lane->relay, Py_NewRef(Py_None));
    Py_XSETREF(lane->pt_map, PyDict_New());
    Py_XSETREF(lane->rewriter, Py_NewRef(Py_None));
    Py_XSETREF(lane->munger, Py_NewRef(Py_None));
    lane->mask = (uint16_t)mask_value;
    lane->ssrc = (uint32_t)ssrc_value;
    lane->every = every;
    rc = lane->pt_map ? 0 : -1;
done:
    Py_XDECREF(seqr), Py_XDECREF(tally), Py_XDECREF(cache), Py_XDECREF(ssrc), Py_XDECREF(mask), Py_XDECREF(seqs);
    Py_XDECREF(packets);
    return rc;
}

static int lane_traverse(fp_lane_t *lane, visitproc visit, void *arg)
{
    Py_VISIT(lane->out);
    Py_VISIT(lane->sequencer);
    Py_VISIT(lane->tally);
    Py_VISIT(lane->cache_seqs);
    Py_VISIT(lane->cache_packets);
    Py_VISIT(lane->relay);
    Py_VISIT(lane->pt_map);
    Py_VISIT(lane->rewriter);
    Py_VISIT(lane->munger);
    return 0;
}

static int lane_clear(fp_lane_t *lane)
{
    Py_CLEAR(lane->out);
    Py_CLEAR(lane->sequencer);
    Py_CLEAR(lane->tally);
    Py_CLEAR(lane->cache_seqs);
    Py_CLEAR(lane->cache_packets);
    Py_CLEAR(lane->relay);
    Py_CLEAR(lane->pt_map);
    Py_CLEAR(lane->rewriter);
    Py_CLEAR(lane->munger);
    return 0;
}

static void lane_dealloc(fp_lane_t *lane)
{
    PyObject_GC_UnTrack(lane);
    lane_clear(lane);
    Py_TYPE(lane)->tp_free((PyObject *)lane);
}

static PyMemberDef lane_members[] = {
    {"relay", T_OBJECT_EX, offsetof(fp_lane_t, relay), 0, "the relay served in C, None for DownTrack.write"},
    {"pt_map", T_OBJECT_EX, offsetof(fp_lane_t, pt_map), 0, "codec mime -> subscriber payload type"},
    {"rewriter", T_OBJECT_EX, offsetof(fp_lane_t, rewriter), 0, "the downtrack's HeaderRewriter"},
    {"munger", T_OBJECT_EX, offsetof(fp_lane_t, munger), 0, "None or the downtrack's C Vp8Munger"},
    {"packets_sent", T_ULONGLONG, offsetof(fp_lane_t, packets_sent), 0, "RTP packets sent"},
    {"bytes_sent", T_ULONGLONG, offsetof(fp_lane_t, bytes_sent), 0, "RTP bytes sent (before SRTP)"},
    {NULL},
};

PyTypeObject fp_lane_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastpath.Lane",
    .tp_doc = "What the C fan-out needs of one downtrack (kept in step by DownTrack._sync_lane)",
    .tp_basicsize = sizeof(fp_lane_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lane_init,
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_traverse = (traverseproc)lane_traverse,
    .tp_clear = (inquiry)lane_clear,
    .tp_members = lane_members,
};
