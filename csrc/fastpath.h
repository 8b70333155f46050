/* sfu._fastpath: the per-subscriber forwarding step in C (see docs/fastpath.md).
 *
 * Shared declarations of the module's three parts: the sequencer (sequencer.c), the direct
 * SRTP + sendto sink of one subscriber transport (sink.c) and the fan-out loop (module.c). */
#ifndef SFU_FASTPATH_H
#define SFU_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sys/socket.h>

/* An RTP packet with its SRTP trailer must fit here (pylibsrtp's own buffer is 1500 bytes). */
#define FP_BUFFER_BYTES 4096
#define FP_SRTP_MAX_TRAILER 144 /* SRTP_MAX_TRAILER_LEN in libsrtp 2 */

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*fp_protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

/* Set once by `configure()`; fan-out and sinks refuse to run before. */
typedef struct {
    fp_protect_fn protect;
    PyObject *connected_state; /* aiortc's DTLS State.CONNECTED */
    PyObject *counters;        /* sfu.media.counters.COUNTERS */
    PyObject *downtrack_type;  /* sfu.media.downtrack.DownTrack: other listeners get their own write() */
} fp_config_t;

extern fp_config_t fp_config;

/* Interned attribute names, made by fp_intern_names(). */
typedef struct {
    PyObject *writer, *sink, *sequencer, *template_, *ssrc, *cache, *mask, *sequence_numbers, *packets,
        *tally, *on_sent, *last_sent_s, *write,
        *lane, *state, *tx_srtp, *send_failures, *ntp_timestamp, *rtp_timestamp, *octet_count, *packet_count,
        *one;
} fp_names_t;

extern fp_names_t fp_names;
int fp_intern_names(void);

/* sequencer.c */
typedef struct {
    PyObject_HEAD
    uint16_t initial_seq;
    uint32_t initial_ts;
    int has_source;
    int sent_any;
    int64_t first_in_ext;   /* extended incoming seq of the current source's first packet */
    int64_t highest_in_ext; /* extended incoming seq of the highest packet seen */
    uint16_t highest_in_seq;
    int64_t seq_offset;     /* outgoing seq = (extended incoming seq + offset) & 0xFFFF */
    uint32_t ts_offset;     /* outgoing ts = incoming ts + offset (mod 2^32) */
    uint16_t last_out_seq;
    uint32_t last_out_ts;
} fp_sequencer_t;

extern PyTypeObject fp_sequencer_type;
int fp_sequencer_map(fp_sequencer_t *s, uint16_t in_seq, uint32_t in_ts, uint16_t *out_seq, uint32_t *out_ts);

/* sink.c */
typedef struct {
    PyObject_HEAD
    PyObject *dtls;      /* aiortc RTCDtlsTransport */
    PyObject *nominated; /* aioice Connection._nominated (dict, never rebound) */
    PyObject *pair;      /* the nominated pair this sink was made for */
    PyObject *session;   /* the pylibsrtp.Session `srtp` belongs to */
    PyObject *queued;    /* transport.get_write_buffer_size */
    PyObject *fallback;  /* transport.sendto: queues what the kernel refuses */
    PyObject *addr;      /* the remote address as Python passes it to `fallback` */
    void *srtp;
    int fd;
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned long long packets, bytes, queued_sends, errors;
} fp_sink_t;

extern PyTypeObject fp_sink_type;
/* 1 if the transport is connected on the same pair and session with an empty send queue,
 * 0 if not, -1 with an exception set. */
int fp_sink_ready(fp_sink_t *sink);
/* Protect buf (len bytes, room for the trailer) in place and send it. 1 sent (or queued), 0 not. */
int fp_sink_transmit(fp_sink_t *sink, uint8_t *buf, int len, int queue_empty);
/* 1 if nothing waits in the transport's user-space queue, 0 if something does, -1 on error. */
int fp_sink_queue_empty(fp_sink_t *sink);

/* lane.c */
typedef struct {
    PyObject_HEAD
    long long packets, bytes;
} fp_tally_t;

extern PyTypeObject fp_tally_type;

typedef struct {
    PyObject_HEAD
    PyObject *out;           /* sfu.media.downtrack.OutStream */
    PyObject *sequencer;     /* out.sequencer (fp_sequencer_t) */
    PyObject *tally;         /* out.tally (fp_tally_t) */
    PyObject *cache_seqs;    /* out.cache._sequence_numbers */
    PyObject *cache_packets; /* out.cache._packets */
    PyObject *relay;         /* served here while it is the source; None otherwise */
    PyObject *pt_map;        /* mime -> subscriber payload type */
    PyObject *rewriter;      /* HeaderRewriter */
    PyObject *munger;        /* None, or the downtrack's C Vp8Munger (simulcast) */
    uint16_t mask;
    uint32_t ssrc;
    int every; /* audio: every packet is a frame for the sender report */
    unsigned long long packets_sent, bytes_sent;
} fp_lane_t;

extern PyTypeObject fp_lane_type;

/* vp8.c */
typedef struct {
    PyObject_HEAD
    long picture_id_offset, tl0_offset, last_picture_id, last_tl0;
    int started;
} fp_vp8_t;

extern PyTypeObject fp_vp8_type;
void fp_vp8_munge(fp_vp8_t *m, uint8_t *buf, Py_ssize_t end, Py_ssize_t offset);

/* latency.c */
extern int fp_latency_on;
void fp_latency_record(void);
PyObject *fp_note_arrival(PyObject *module, PyObject *arg);
PyObject *fp_delay_histogram(PyObject *module, PyObject *unused);

/* module.c */
int fp_add_to_attr(PyObject *obj, PyObject *name, long long delta);
PyObject *fp_monotonic(void);

#endif
