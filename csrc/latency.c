/* Forwarding delay inside the server, measured while profiling (SFU_FASTPATH_PROFILE=1): from the
 * kernel's receive timestamp of a publisher's datagram (SIOCGSTAMPNS, read by the receive tap right
 * after the datagram was read) to the return of sendto for each subscriber's copy. That is what the
 * server adds (socket queue while the loop was busy, SRTP, routing, the fan-out up to that copy),
 * without the load generator's own scheduling. A histogram of 10 us bins up to 100 ms; on with
 * profile(True) (module.c). */
#include "fastpath.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <time.h>

#define BIN_NS 10000LL
#define BINS 10001 /* the last one: 100 ms and more */

int fp_latency_on;
static long long arrival_ns; /* CLOCK_REALTIME of the datagram being forwarded, 0 if unknown */
static unsigned long long bins[BINS];

void fp_latency_record(void)
{
    if (arrival_ns == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    long long delay = (long long)now.tv_sec * 1000000000LL + now.tv_nsec - arrival_ns;
    long long bin = delay < 0 ? 0 : delay / BIN_NS;
    bins[bin < BINS ? bin : BINS - 1]++;
}

PyObject *fp_note_arrival(PyObject *module, PyObject *arg)
{
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct timespec stamp;
    /* the first call on a socket turns timestamps on and fails (ENOENT): that packet is not counted */
    arrival_ns = ioctl(fd, SIOCGSTAMPNS, &stamp) == 0 ? (long long)stamp.tv_sec * 1000000000LL + stamp.tv_nsec : 0;
    Py_RETURN_NONE;
}

PyObject *fp_delay_histogram(PyObject *module, PyObject *unused)
{
    Py_ssize_t used = BINS;
    while (used > 0 && bins[used - 1] == 0)
        used--;
    PyObject *counts = PyList_New(used);
    if (counts == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < used; i++) {
        PyObject *count = PyLong_FromUnsignedLongLong(bins[i]);
        if (count == NULL) {
            Py_DECREF(counts);
            return NULL;
        }
        PyList_SET_ITEM(counts, i, count);
    }
    return Py_BuildValue("{sLsN}", "bin_ns", BIN_NS, "counts", counts);
}
