/* sfu._fastpath: the steady-state forwarding step of sfu.media.downtrack.DownTrack.write in C.
 *
 * fanout() walks a relay's downtracks. A downtrack in the steady state (configured, forwarding from
 * this very relay with no layer switch pending, no VP8 munging, its transport connected with an
 * empty send queue) is served here: sequence/timestamp mapping on its C Sequencer, a copy of the
 * packet with the subscriber's header (the extension block rewritten once per packet by the shared
 * HeaderRewriter.template), the NACK cache entry, SRTP protect and sendto, the counters and the
 * sender-report bookkeeping, all with the same effects as the Python method. Every other downtrack
 * gets DownTrack.write itself, so the rules live in one place: this file only repeats the steady
 * case, and tests/unit/test_fastpath.py checks both give the same bytes on the wire. */
#include "fastpath.h"

#include <string.h>
#include <time.h>

fp_config_t fp_config;
fp_names_t fp_names;
/* Per process: packets served in C and downtrack writes handed to DownTrack.write (see stats()). */
static unsigned long long served_in_c, handed_to_python;
/* Thread CPU time spent in fanout() (only while profiling: reading it is a system call). */
static int profiling;
static unsigned long long fanout_cpu_ns, fanout_calls;

static unsigned long long thread_cpu_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (unsigned long long)now.tv_sec * 1000000000ULL + (unsigned long long)now.tv_nsec;
}

#define FALLBACK 2

int fp_intern_names(void)
{
#define NAME(field, text)                                        \
    if ((fp_names.field = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    NAME(writer, "writer") NAME(sink, "sink") NAME(sequencer, "sequencer") NAME(template_, "template")
    NAME(ssrc, "ssrc") NAME(cache, "cache") NAME(mask, "_mask") NAME(sequence_numbers, "_sequence_numbers")
    NAME(packets, "_packets") NAME(tally, "tally") NAME(on_sent, "on_sent") NAME(last_sent_s, "last_sent_s") NAME(write, "write") NAME(state, "_state")
    NAME(tx_srtp, "_tx_srtp") NAME(lane, "lane") NAME(send_failures, "send_failures")
    NAME(ntp_timestamp, "_RTCRtpSender__ntp_timestamp") NAME(rtp_timestamp, "_RTCRtpSender__rtp_timestamp")
    NAME(octet_count, "_RTCRtpSender__octet_count") NAME(packet_count, "_RTCRtpSender__packet_count")
#undef NAME
    fp_names.one = PyLong_FromLong(1);
    return fp_names.one == NULL ? -1 : 0;
}

int fp_add_to_attr(PyObject *obj, PyObject *name, long long delta)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    long long current = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (current == -1 && PyErr_Occurred())
        return -1;
    PyObject *updated = PyLong_FromLongLong(current + delta);
    if (updated == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, updated);
    Py_DECREF(updated);
    return rc;
}

PyObject *fp_monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* what time.monotonic() reads on Linux */
    return PyFloat_FromDouble((double)now.tv_sec + now.tv_nsec * 1e-9);
}

static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void put_u32(uint8_t *p, uint32_t v) { put_u16(p, v >> 16), put_u16(p + 2, v & 0xFFFF); }

static int cache_put(fp_lane_t *lane, uint16_t seq, const uint8_t *buf, int len)
{
    Py_ssize_t slot = seq & lane->mask; /* the lists' length was checked against the mask in Lane() */
    PyObject *packet = PyBytes_FromStringAndSize((const char *)buf, len);
    if (packet == NULL)
        return -1;
    PyObject *number = PyLong_FromLong(seq);
    if (number == NULL) {
        Py_DECREF(packet);
        return -1;
    }
    PyList_SetItem(lane->cache_seqs, slot, number);  /* steals */
    PyList_SetItem(lane->cache_packets, slot, packet); /* steals */
    return 0;
}

/* Counters and sender-report bookkeeping after a packet of `len` bytes went out (DownTrack.write's tail). */
static int account(fp_lane_t *lane, int len, int header_bytes, int marker, uint32_t out_ts)
{
    fp_tally_t *tally = (fp_tally_t *)lane->tally;
    lane->packets_sent++;
    lane->bytes_sent += (unsigned long long)len;
    tally->packets++;
    tally->bytes += len - header_bytes;
    if (!marker && !lane->every)
        return 0;
    PyObject *on_sent = PyObject_GetAttr(lane->out, fp_names.on_sent);
    if (on_sent == NULL)
        return -1;
    if (on_sent != Py_None) {
        PyObject *result = PyObject_CallFunction(on_sent, "kLL", (unsigned long)out_ts, tally->bytes, tally->packets);
        if (result == NULL) {
            Py_DECREF(on_sent);
            return -1;
        }
        Py_DECREF(result);
    }
    Py_DECREF(on_sent);
    tally->packets = tally->bytes = 0;
    if (marker) {
        PyObject *now = fp_monotonic();
        int rc = now ? PyObject_SetAttr(lane->out, fp_names.last_sent_s, now) : -1;
        Py_XDECREF(now);
        return rc;
    }
    return 0;
}

typedef struct {
    PyObject *data, *mime, *relay;
    const uint8_t *raw;
    Py_ssize_t size;
    uint16_t seq;
    uint32_t ts;
    int header_bytes;
    PyObject *rewriter, *template_; /* the last rewriter asked and its template, owned */
} packet_t;

static PyObject *template_for(packet_t *p, PyObject *rewriter)
{
    if (rewriter != p->rewriter) {
        PyObject *template_ = PyObject_CallMethodOneArg(rewriter, fp_names.template_, p->data);
        if (template_ == NULL)
            return NULL;
        Py_XSETREF(p->template_, template_);
        Py_XSETREF(p->rewriter, Py_NewRef(rewriter));
    }
    return p->template_;
}

/* One downtrack: 1 sent, 0 not sent, FALLBACK for DownTrack.write, -1 on error. */
static int forward_one(PyObject *dt, packet_t *p)
{
    if ((PyObject *)Py_TYPE(dt) != fp_config.downtrack_type)
        return FALLBACK;
    PyObject *lane_obj = PyObject_GetAttr(dt, fp_names.lane), *writer = NULL, *sink = NULL;
    if (lane_obj == NULL)
        return -1;
    fp_lane_t *lane = (fp_lane_t *)lane_obj;
    int rc = FALLBACK, check;
    if (Py_TYPE(lane_obj) != &fp_lane_type || lane->relay != p->relay)
        goto done;
    if ((writer = PyObject_GetAttr(lane->out, fp_names.writer)) == NULL)
        goto error;
    sink = PyObject_GetAttr(writer, fp_names.sink);
    if (sink == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            goto error;
        PyErr_Clear(); /* another writer (tests): Python path */
        goto done;
    }
    if (Py_TYPE(sink) != &fp_sink_type)
        goto done;
    if ((check = fp_sink_ready((fp_sink_t *)sink)) != 1 || (check = fp_sink_queue_empty((fp_sink_t *)sink)) != 1) {
        if (check < 0)
            goto error;
        goto done;
    }
    PyObject *template_ = template_for(p, lane->rewriter);
    if (template_ == NULL)
        goto error;
    const uint8_t *source;
    Py_ssize_t length;
    if (PyBytes_Check(template_))
        source = (const uint8_t *)PyBytes_AS_STRING(template_), length = PyBytes_GET_SIZE(template_);
    else if (PyByteArray_Check(template_))
        source = (const uint8_t *)PyByteArray_AS_STRING(template_), length = PyByteArray_GET_SIZE(template_);
    else
        goto done; /* malformed (None): DownTrack.write counts it */
    if (length != p->size || length < 12 || length + FP_SRTP_MAX_TRAILER > FP_BUFFER_BYTES)
        goto done;
    /* From here on the packet is this downtrack's: the same steps, in the same order, as DownTrack.write. */
    uint16_t out_seq;
    uint32_t out_ts;
    rc = 0;
    if (!fp_sequencer_map((fp_sequencer_t *)lane->sequencer, p->seq, p->ts, &out_seq, &out_ts))
        goto done;
    PyObject *pt_obj = PyDict_GetItemWithError(lane->pt_map, p->mime);
    if (pt_obj == NULL) {
        if (PyErr_Occurred())
            goto error;
        goto done;
    }
    long out_pt = PyLong_AsLong(pt_obj);
    if (out_pt == -1 && PyErr_Occurred())
        goto error;
    uint8_t buf[FP_BUFFER_BYTES];
    int len = (int)length;
    memcpy(buf, source, (size_t)len);
    buf[1] = (uint8_t)((buf[1] & 0x80) | (out_pt & 0x7F));
    put_u16(buf + 2, out_seq);
    put_u32(buf + 4, out_ts);
    put_u32(buf + 8, lane->ssrc);
    if (lane->munger != Py_None) {
        if (Py_TYPE(lane->munger) != &fp_vp8_type) { /* _sync_lane lets only the C munger through */
            PyErr_SetString(PyExc_TypeError, "Lane.munger must be None or sfu._fastpath.Vp8Munger");
            goto error;
        }
        fp_vp8_munge((fp_vp8_t *)lane->munger, buf, len, p->header_bytes);
    }
    if (cache_put(lane, out_seq, buf, len) < 0)
        goto error;
    if (!fp_sink_transmit((fp_sink_t *)sink, buf, len, 1)) {
        if (fp_add_to_attr(fp_config.counters, fp_names.send_failures, 1) < 0)
            goto error;
        goto done;
    }
    if (fp_latency_on)
        fp_latency_record();
    if (account(lane, len, p->header_bytes, p->raw[1] & 0x80, out_ts) < 0)
        goto error;
    rc = 1;
    goto done;
error:
    rc = -1;
done:
    Py_DECREF(lane_obj), Py_XDECREF(writer), Py_XDECREF(sink);
    return rc;
}

static PyObject *fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8)
        return PyErr_Format(PyExc_TypeError, "fanout() takes 8 arguments (%zd given)", nargs);
    PyObject *list = args[0];
    if (!PyList_Check(list) || !PyBytes_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "fanout(list, bytes, ...)");
    packet_t p = {.data = args[1], .mime = args[3], .relay = args[7]};
    p.raw = (const uint8_t *)PyBytes_AS_STRING(p.data);
    p.size = PyBytes_GET_SIZE(p.data);
    p.seq = (uint16_t)PyLong_AsUnsignedLongMask(args[4]);
    p.ts = (uint32_t)PyLong_AsUnsignedLongMask(args[5]);
    p.header_bytes = (int)PyLong_AsLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (p.size < 12)
        return PyErr_Format(PyExc_ValueError, "not an RTP packet");
    long sent = 0;
    unsigned long long started = profiling ? thread_cpu_ns() : 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *dt = Py_NewRef(PyList_GET_ITEM(list, i));
        int rc = fp_config.protect ? forward_one(dt, &p) : FALLBACK;
        if (rc == 1)
            served_in_c++;
        if (rc == FALLBACK) {
            handed_to_python++;
            PyObject *call[8] = {dt, args[1], args[2], args[3], args[4], args[5], args[6], args[7]};
            PyObject *result = PyObject_VectorcallMethod(fp_names.write, call, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            rc = result == NULL ? -1 : PyObject_IsTrue(result);
            Py_XDECREF(result);
        }
        Py_DECREF(dt);
        if (rc < 0) {
            Py_XDECREF(p.rewriter), Py_XDECREF(p.template_);
            return NULL;
        }
        sent += rc;
    }
    Py_XDECREF(p.rewriter), Py_XDECREF(p.template_);
    if (profiling) {
        fanout_cpu_ns += thread_cpu_ns() - started;
        fanout_calls++;
    }
    return PyLong_FromLong(sent);
}

static PyObject *feed_sender_report(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* sfu.rtc.hooks.feed_sender_report in C: the NTP time of now and the RTP timestamp of the last
     * packet sent, and the packet/octet counts, where aiortc's RTCRtpSender builds its SR from. */
    if (nargs < 3 || nargs > 4)
        return PyErr_Format(PyExc_TypeError, "feed_sender_report(sender, rtp_timestamp, payload_bytes, packets=1)");
    PyObject *sender = args[0];
    long long octets = PyLong_AsLongLong(args[2]), packets = nargs == 4 ? PyLong_AsLongLong(args[3]) : 1;
    if (PyErr_Occurred())
        return NULL;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* time.time() */
    uint64_t micros = (uint64_t)now.tv_nsec / 1000;
    uint64_t ntp = ((uint64_t)now.tv_sec + 2208988800ULL) << 32 | (micros << 32) / 1000000;
    PyObject *ntp_obj = PyLong_FromUnsignedLongLong(ntp);
    if (ntp_obj == NULL)
        return NULL;
    int rc = PyObject_SetAttr(sender, fp_names.ntp_timestamp, ntp_obj);
    Py_DECREF(ntp_obj);
    if (rc < 0 || PyObject_SetAttr(sender, fp_names.rtp_timestamp, args[1]) < 0
        || fp_add_to_attr(sender, fp_names.octet_count, octets) < 0
        || fp_add_to_attr(sender, fp_names.packet_count, packets) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *stats(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsK}", "served_in_c", served_in_c, "handed_to_python", handed_to_python,
                         "fanout_calls", fanout_calls, "fanout_cpu_ns", fanout_cpu_ns);
}

static PyObject *profile(PyObject *module, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    profiling = fp_latency_on = on;
    Py_RETURN_NONE;
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *connected, *counters, *downtrack_type;
    unsigned long long protect;
    if (!PyArg_ParseTuple(args, "OKOO!", &connected, &protect, &counters, &PyType_Type, &downtrack_type))
        return NULL;
    Py_XSETREF(fp_config.downtrack_type, Py_NewRef(downtrack_type));
    Py_XSETREF(fp_config.connected_state, Py_NewRef(connected));
    Py_XSETREF(fp_config.counters, Py_NewRef(counters));
    fp_config.protect = (fp_protect_fn)(uintptr_t)protect;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(downtracks, data, payload_type, mime, seq, ts, header_bytes, relay) -> packets sent"},
    {"feed_sender_report", (PyCFunction)(void (*)(void))feed_sender_report, METH_FASTCALL,
     "feed_sender_report(sender, rtp_timestamp, payload_bytes, packets=1)"},
    {"stats", stats, METH_NOARGS,
     "{'served_in_c': packets sent by the C step, 'handed_to_python': downtrack writes given to DownTrack.write}"},
    {"note_arrival", fp_note_arrival, METH_O, "note_arrival(fd): the datagram just read on fd is forwarded next"},
    {"delay_histogram", fp_delay_histogram, METH_NOARGS, "{'bin_ns': width, 'counts': [...]}: forwarding delays"},
    {"profile", profile, METH_O, "profile(on): count the thread CPU time of every fanout() in stats() and record forwarding delays"},
    {"configure", configure, METH_VARARGS,
     "configure(dtls_connected_state, srtp_protect_address, counters, downtrack_type): once, before fanout"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sfu._fastpath", "The steady-state forwarding step in C (docs/fastpath.md)", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (fp_intern_names() < 0 || PyType_Ready(&fp_sequencer_type) < 0 || PyType_Ready(&fp_sink_type) < 0
        || PyType_Ready(&fp_lane_type) < 0 || PyType_Ready(&fp_tally_type) < 0 || PyType_Ready(&fp_vp8_type) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Sequencer", (PyObject *)&fp_sequencer_type) < 0
        || PyModule_AddObjectRef(module, "Sink", (PyObject *)&fp_sink_type) < 0
        || PyModule_AddObjectRef(module, "Lane", (PyObject *)&fp_lane_type) < 0
        || PyModule_AddObjectRef(module, "Tally", (PyObject *)&fp_tally_type) < 0
        || PyModule_AddObjectRef(module, "Vp8Munger", (PyObject *)&fp_vp8_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
