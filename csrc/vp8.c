/* Vp8Munger in C: the same behaviour and API as sfu.media.vp8.Vp8Munger (the reference, which
 * documents the rules): PictureID and TL0PICIDX continue across simulcast layer switches.
 * tests/unit/test_vp8_munger.py runs both on the same inputs. */
#include "fastpath.h"

#define X_BIT 0x80
#define I_BIT 0x80
#define L_BIT 0x40
#define M_BIT 0x80

void fp_vp8_munge(fp_vp8_t *m, uint8_t *buf, Py_ssize_t end, Py_ssize_t offset)
{
    if (offset >= end || !(buf[offset] & X_BIT) || offset + 1 >= end)
        return;
    uint8_t extension = buf[offset + 1];
    Py_ssize_t pos = offset + 2;
    if ((extension & I_BIT) && pos < end) {
        long picture_id;
        if (buf[pos] & M_BIT) {
            if (pos + 1 >= end)
                return;
            picture_id = ((((long)(buf[pos] & 0x7F) << 8) | buf[pos + 1]) + m->picture_id_offset) & 0x7FFF;
            buf[pos] = (uint8_t)(M_BIT | (picture_id >> 8));
            buf[pos + 1] = (uint8_t)(picture_id & 0xFF);
            pos += 2;
        } else {
            picture_id = ((buf[pos] & 0x7F) + m->picture_id_offset) & 0x7F;
            buf[pos] = (uint8_t)picture_id;
            pos += 1;
        }
        m->last_picture_id = picture_id;
    }
    if ((extension & L_BIT) && pos < end) {
        long tl0 = (buf[pos] + m->tl0_offset) & 0xFF;
        buf[pos] = (uint8_t)tl0;
        m->last_tl0 = tl0;
    }
}

static void read_ids(const uint8_t *p, Py_ssize_t end, Py_ssize_t offset, long *picture_id, long *tl0)
{
    *picture_id = *tl0 = -1;
    if (offset + 1 >= end || !(p[offset] & X_BIT))
        return;
    uint8_t extension = p[offset + 1];
    Py_ssize_t pos = offset + 2;
    if ((extension & I_BIT) && pos < end) {
        if ((p[pos] & M_BIT) && pos + 1 < end) {
            *picture_id = ((long)(p[pos] & 0x7F) << 8) | p[pos + 1];
            pos += 2;
        } else {
            *picture_id = p[pos] & 0x7F;
            pos += 1;
        }
    }
    if ((extension & L_BIT) && pos < end)
        *tl0 = p[pos];
}

static int vp8_init(fp_vp8_t *m, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "", keywords))
        return -1;
    m->picture_id_offset = m->tl0_offset = 0;
    m->last_picture_id = m->last_tl0 = -1;
    m->started = 0;
    return 0;
}

static PyObject *vp8_switch_source(fp_vp8_t *m, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*n", &view, &offset))
        return NULL;
    long picture_id, tl0;
    read_ids((const uint8_t *)view.buf, view.len, offset, &picture_id, &tl0);
    PyBuffer_Release(&view);
    if (m->started && picture_id >= 0)
        m->picture_id_offset = (m->last_picture_id + 1 - picture_id) & 0x7FFF;
    if (m->started && tl0 >= 0)
        m->tl0_offset = (m->last_tl0 + 1 - tl0) & 0xFF;
    m->started = 1;
    Py_RETURN_NONE;
}

static PyObject *vp8_munge(fp_vp8_t *m, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "O!n", &PyByteArray_Type, &buf, &offset))
        return NULL;
    if (offset >= 0)
        fp_vp8_munge(m, (uint8_t *)PyByteArray_AS_STRING(buf), PyByteArray_GET_SIZE(buf), offset);
    Py_RETURN_NONE;
}

static PyMethodDef vp8_methods[] = {
    {"switch_source", (PyCFunction)vp8_switch_source, METH_VARARGS,
     "switch_source(payload, offset): the next source's picture ids continue after the last one sent"},
    {"munge", (PyCFunction)vp8_munge, METH_VARARGS, "munge(buf: bytearray, offset): rewrite the descriptor in place"},
    {NULL},
};

PyTypeObject fp_vp8_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fastpath.Vp8Munger",
    .tp_doc = "VP8 PictureID/TL0PICIDX continuity across layer switches (C; see sfu.media.vp8)",
    .tp_basicsize = sizeof(fp_vp8_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)vp8_init,
    .tp_methods = vp8_methods,
};
