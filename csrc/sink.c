/* Sink: SRTP-protect and send on one subscriber's nominated ICE pair, in C.
 *
 * Made by sfu.rtc.writer.RtpWriter for a pair on a plain UDP socket; valid while the DTLS transport
 * is connected on that same pair and SRTP session (checked by identity before every packet, as
 * RtpWriter does). The datagram goes straight to the socket with sendto(2) when the transport's
 * user-space queue is empty; otherwise, or when the kernel refuses it (EAGAIN), it goes through
 * the transport's own sendto, which queues it behind the others (order is kept). */
#include "fastpath.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

int fp_sink_ready(fp_sink_t *sink)
{
    if (sink->dtls == NULL || sink->nominated == NULL || sink->queued == NULL || sink->fallback == NULL)
        return 0; /* cleared by the collector (or never initialised) */
    PyObject *state = PyObject_GetAttr(sink->dtls, fp_names.state);
    if (state == NULL)
        return -1;
    Py_DECREF(state); /* identity only: the enum member lives as long as its class */
    if (state != fp_config.connected_state)
        return 0;
    PyObject *pair = PyDict_GetItemWithError(sink->nominated, fp_names.one);
    if (pair != sink->pair)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *session = PyObject_GetAttr(sink->dtls, fp_names.tx_srtp);
    if (session == NULL)
        return -1;
    Py_DECREF(session);
    if (session != sink->session)
        return 0;
    return 1;
}

int fp_sink_queue_empty(fp_sink_t *sink)
{
    if (sink->queued == NULL)
        return 0;
    PyObject *queued = PyObject_CallNoArgs(sink->queued);
    if (queued == NULL)
        return -1;
    long size = PyLong_AsLong(queued);
    Py_DECREF(queued);
    if (size == -1 && PyErr_Occurred())
        return -1;
    return size == 0;
}

static int send_queued(fp_sink_t *sink, const uint8_t *buf, int len)
{
    if (sink->fallback == NULL || sink->addr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sink cleared");
        return -1;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)buf, len);
    if (data == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(sink->fallback, data, sink->addr, NULL);
    Py_DECREF(data);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    sink->queued_sends++;
    return 1;
}

int fp_sink_transmit(fp_sink_t *sink, uint8_t *buf, int len, int queue_empty)
{
    /* the session reference keeps `srtp` alive; without it (a cleared sink) the pointer may dangle */
    if (len + FP_SRTP_MAX_TRAILER > FP_BUFFER_BYTES || fp_config.protect == NULL || sink->session == NULL) {
        sink->errors++;
        return 0;
    }
    int size = len;
    if (fp_config.protect(sink->srtp, buf, &size) != 0) { /* srtp_err_status_ok == 0 */
        sink->errors++;
        return 0;
    }
    int sent = -1;
    if (queue_empty) {
        ssize_t n;
        do {
            n = sendto(sink->fd, buf, (size_t)size, 0, (struct sockaddr *)&sink->sa, sink->salen);
        } while (n < 0 && errno == EINTR);
        if (n >= 0)
            sent = 1;
        else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
            sink->errors++; /* e.g. ICMP unreachable reported late: the datagram is gone, as with uvloop */
            return 0;
        }
    }
    if (sent < 0 && send_queued(sink, buf, size) < 0) {
        PyErr_Clear(); /* a closing transport: never raise into the relay */
        sink->errors++;
        return 0;
    }
    sink->packets++;
    sink->bytes += (unsigned long long)size;
    return 1;
}

static int parse_address(fp_sink_t *sink, PyObject *addr)
{
    const char *host;
    int port;
    if (!PyArg_ParseTuple(addr, "si|II", &host, &port, NULL, NULL))
        return -1;
    memset(&sink->sa, 0, sizeof(sink->sa));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&sink->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sink->sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        sink->salen = sizeof(*v4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        sink->salen = sizeof(*v6);
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not a numeric address: %s", host);
    return -1;
}

static int sink_init(fp_sink_t *sink, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"dtls", "nominated", "pair", "session", "srtp", "fd", "addr", "queued",
                               "fallback", NULL};
    PyObject *dtls, *nominated, *pair, *session, *addr, *queued, *fallback;
    unsigned long long srtp;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!OOKiOOO", keywords, &dtls, &PyDict_Type, &nominated,
                                     &pair, &session, &srtp, &fd, &addr, &queued, &fallback))
        return -1;
    if (srtp == 0 || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "no SRTP session or socket");
        return -1;
    }
    if (parse_address(sink, addr) < 0)
        return -1;
    sink->srtp = (void *)(uintptr_t)srtp;
    sink->fd = fd;
    Py_XSETREF(sink->dtls, Py_NewRef(dtls));
    Py_XSETREF(sink->nominated, Py_NewRef(nominated));
    Py_XSETREF(sink->pair, Py_NewRef(pair));
    Py_XSETREF(sink->session, Py_NewRef(session));
    Py_XSETREF(sink->addr, Py_NewRef(addr));
    Py_XSETREF(sink->queued, Py_NewRef(queued));
    Py_XSETREF(sink->fallback, Py_NewRef(fallback));
    return 0;
}

/* The sink holds the DTLS transport, which (through aiortc and the receive tap) leads back to the
 * participant that holds this sink: the collector must see these references to free such cycles. */
static int sink_traverse(fp_sink_t *sink, visitproc visit, void *arg)
{
    Py_VISIT(sink->dtls);
    Py_VISIT(sink->nominated);
    Py_VISIT(sink->pair);
    Py_VISIT(sink->session);
    Py_VISIT(sink->addr);
    Py_VISIT(sink->queued);
    Py_VISIT(sink->fallback);
    return 0;
}

static int sink_clear(fp_sink_t *sink)
{
    Py_CLEAR(sink->dtls);
    Py_CLEAR(sink->nominated);
    Py_CLEAR(sink->pair);
    Py_CLEAR(sink->session);
    Py_CLEAR(sink->addr);
    Py_CLEAR(sink->queued);
    Py_CLEAR(sink->fallback);
    return 0;
}

static void sink_dealloc(fp_sink_t *sink)
{
    PyObject_GC_UnTrack(sink);
    sink_clear(sink);
    Py_TYPE(sink)->tp_free((PyObject *)sink);
}

static PyObject *sink_send(fp_sink_t *sink, PyObject *const *args, Py_ssize_t nargs)
{
    /* For RtpWriter.write (packets that do not take the fan-out loop: NACK resends, simulcast
     * switches): it checked the transport and read the queue, and says whether the queue is empty. */
    Py_buffer view;
    uint8_t buf[FP_BUFFER_BYTES];
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "send(packet, queue_empty) takes 2 arguments (%zd given)", nargs);
    int empty = PyObject_IsTrue(args[1]);
    if (empty < 0 || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len + FP_SRTP_MAX_TRAILER > FP_BUFFER_BYTES) {
        PyBuffer_Release(&view);
        sink->errors++;
        Py_RETURN_FALSE;
    }
    int len = (int)view.len;
    memcpy(buf, view.buf, (size_t)len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(fp_sink_transmit(sink, buf, len, empty));
}

static PyObject *sink_stats(fp_sink_t *sink, void *closure)
{
    return Py_BuildValue("{sKsKsKsK}", "packets", sink->packets, "bytes", sink->bytes, "queued_sends",
                         sink->queued_sends, "errors", sink->errors);
}

static PyMethodDef sink_methods[] = {
    {"send", (PyCFunction)(void (*)(void))sink_send, METH_FASTCALL,
     "send(packet, queue_empty) -> bool: protect and send (queue behind a non-empty queue) one RTP packet"},
    {NULL},
};

static PyGetSetDef sink_getset[] = {
    {"stats", (getter)sink_stats, NULL, "packets, bytes (after SRTP), queued_sends, errors", NULL},
    {NULL},
};

PyTypeObject fp_sink_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastpath.Sink",
    .tp_doc = "Direct SRTP protect + sendto on one subscriber's nominated ICE pair",
    .tp_basicsize = sizeof(fp_sink_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sink_init,
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_traverse = (traverseproc)sink_traverse,
    .tp_clear = (inquiry)sink_clear,
    .tp_methods = sink_methods,
    .tp_getset = sink_getset,
};
