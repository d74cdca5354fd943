/* servekit.grpc.native._h2: one HTTP/2 server connection for gRPC unary calls, on nghttp2.
 *
 * Why C: grpcio's asyncio server spends most of each call in its own machinery (the C core's
 * completion queue, the bridge into asyncio, a context and a task per call); see
 * benchmarks/results/grpc_frontends.md. This module does HTTP/2 (framing, HPACK, flow control,
 * SETTINGS, PING, GOAWAY) with nghttp2 in memory mode and hands Python only whole calls. The
 * sockets, TLS and the event loop stay in Python (servekit/grpc/native/server.py): Python feeds
 * the bytes it read and writes the bytes this module wants sent.
 *
 * Session(max_message_bytes, max_concurrent_streams, streaming_paths=frozenset())
 *   feed(data) -> list of events, 4-tuples. A unary call is (stream_id, path, metadata, message):
 *       path      bytes, the :path pseudo-header;
 *       metadata  list of (name, value) bytes pairs: every header that is not a pseudo-header;
 *       message   bytes: the whole request body (gRPC's 5-byte prefix included), or None when it
 *                 grew past max_message_bytes (the caller answers RESOURCE_EXHAUSTED).
 *     A call to one of streaming_paths (bytes) is handed over as it arrives instead:
 *       (stream_id, path, metadata, True) when its HEADERS are in, then
 *       (stream_id, None, chunk, False) for each piece of DATA (gRPC framing is the caller's), then
 *       (stream_id, None, b"", True) when the client has half-closed.
 *     A client that resets a stream before its answer is complete shows up as (stream_id, None, None, None).
 *     Raises H2Error when the peer broke the protocol: the connection is then done.
 *   respond(stream_id, message, trailers) -> bool
 *       message   bytes (one gRPC message, sent with the 5-byte prefix) or None (trailers-only);
 *       trailers  sequence of (name, value) bytes pairs (grpc-status first).
 *     False when the stream is gone (reset by the client, or the connection closed).
 *   start(stream_id) -> bool; send(stream_id, message) -> bool; finish(stream_id, trailers) -> bool:
 *     a streamed answer: the HEADERS, then any number of messages (each framed here), then trailers.
 *   consume(stream_id, nbytes): a streaming call's DATA was taken by Python: credit the flow-control
 *     window back (unary bodies are credited at once; a streaming call's only as Python reads it).
 *   data_to_send() -> bytes: everything nghttp2 has queued (b"" when nothing).
 *   want_read() / want_write() -> bool: both False once the session is over.
 *   shutdown_notice(): a graceful GOAWAY (new streams refused; the ones open finish).
 *   goaway(error_code=0): the final GOAWAY naming the last stream this side processed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <nghttp2/nghttp2.h>
#include <string.h>

static PyObject *H2Error;

typedef struct Stream {
    struct Stream *prev, *next; /* every open stream of the session, so that dealloc frees them */
    int32_t id;
    PyObject *path;      /* bytes, or NULL until :path arrives */
    PyObject *metadata;  /* list of (bytes, bytes) */
    PyObject *body;      /* bytes used as a growable buffer (refcount 1, resized), or NULL */
    Py_ssize_t len;
    int too_large;
    int streaming;       /* a streaming method: its DATA goes to Python as it arrives */
    int handed;          /* END_STREAM seen and the call given to Python (streaming: opened) */
    int answered;        /* respond() was called */
    /* the answer's DATA: the 5-byte prefix, then out */
    unsigned char prefix[5];
    PyObject *out;
    Py_ssize_t sent;     /* bytes of prefix + out already given to nghttp2 */
    nghttp2_nv *trailers;
    size_t ntrailers;
    char *trailer_bytes; /* one block holding every trailer name and value */
    /* a streamed answer: messages queued by send(), read by read_streamed */
    char *queue;
    size_t queued, queue_cap, queue_read;
    int finished;        /* finish() was called: after the queue, the trailers */
} Stream;

typedef struct {
    PyObject_HEAD
    nghttp2_session *session;
    PyObject *calls;     /* list being filled during feed(), else NULL */
    Py_ssize_t max_message;
    PyObject *streaming_paths; /* frozenset of the paths whose calls stream (bytes) */
    Stream *streams;     /* head of the open streams' list */
    int failed;          /* a callback raised a Python exception */
} Session;

static void stream_free(Stream *stream) {
    Py_XDECREF(stream->path);
    Py_XDECREF(stream->metadata);
    Py_XDECREF(stream->body);
    Py_XDECREF(stream->out);
    PyMem_Free(stream->trailers);
    PyMem_Free(stream->trailer_bytes);
    PyMem_Free(stream->queue);
    PyMem_Free(stream);
}

static void unlink_stream(Session *self, Stream *stream) {
    if (stream->prev != NULL)
        stream->prev->next = stream->next;
    else
        self->streams = stream->next;
    if (stream->next != NULL)
        stream->next->prev = stream->prev;
}

static int fail(Session *self) {
    self->failed = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    Session *self = (Session *)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    Stream *stream = PyMem_Calloc(1, sizeof(Stream));
    if (stream == NULL) {
        PyErr_NoMemory();
        return fail(self);
    }
    stream->id = frame->hd.stream_id;
    stream->metadata = PyList_New(0);
    if (stream->metadata == NULL) {
        PyMem_Free(stream);
        return fail(self);
    }
    stream->next = self->streams;
    if (self->streams != NULL)
        self->streams->prev = stream;
    self->streams = stream;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, stream);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
    Session *self = (Session *)user_data;
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    Stream *stream = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (stream == NULL)
        return 0;
    if (namelen > 0 && name[0] == ':') {
        if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
            Py_XDECREF(stream->path);
            stream->path = PyBytes_FromStringAndSize((const char *)value, (Py_ssize_t)valuelen);
            if (stream->path == NULL)
                return fail(self);
        }
        return 0;
    }
    PyObject *pair = Py_BuildValue("(y#y#)", name, (Py_ssize_t)namelen, value, (Py_ssize_t)valuelen);
    if (pair == NULL)
        return fail(self);
    int rc = PyList_Append(stream->metadata, pair);
    Py_DECREF(pair);
    return rc < 0 ? fail(self) : 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *user_data) {
    Session *self = (Session *)user_data;
    (void)flags;
    Stream *stream = nghttp2_session_get_stream_user_data(session, stream_id);
    if (stream == NULL || !stream->streaming) {
        /* a unary call's body (or DATA of no call): window credit back at once; its size is capped */
        (void)nghttp2_session_consume(session, stream_id, len);
    }
    if (stream == NULL || stream->too_large || len == 0)
        return 0;
    if (stream->streaming) {
        if (self->calls == NULL)
            return 0;
        PyObject *chunk = Py_BuildValue("(iOy#O)", stream_id, Py_None, data, (Py_ssize_t)len, Py_False);
        if (chunk == NULL || PyList_Append(self->calls, chunk) < 0) {
            Py_XDECREF(chunk);
            return fail(self);
        }
        Py_DECREF(chunk);
        return 0;
    }
    Py_ssize_t needed = stream->len + (Py_ssize_t)len;
    if (needed > self->max_message + 5) {  /* the message's prefix does not count against the limit */
        stream->too_large = 1;
        Py_CLEAR(stream->body);
        stream->len = 0;
        return 0;
    }
    if (stream->body == NULL) {
        stream->body = PyBytes_FromStringAndSize(NULL, needed < 4096 ? 4096 : needed);
        if (stream->body == NULL)
            return fail(self);
    } else if (needed > PyBytes_GET_SIZE(stream->body)) {
        Py_ssize_t capacity = PyBytes_GET_SIZE(stream->body) * 2;
        if (capacity < needed)
            capacity = needed;
        if (_PyBytes_Resize(&stream->body, capacity) < 0)
            return fail(self);
    }
    memcpy(PyBytes_AS_STRING(stream->body) + stream->len, data, len);
    stream->len = needed;
    return 0;
}

static int hand_over(Session *self, Stream *stream) {
    PyObject *message;
    if (stream->too_large) {
        message = Py_NewRef(Py_None);
    } else if (stream->body == NULL) {
        message = PyBytes_FromStringAndSize("", 0);
    } else {
        if (stream->len != PyBytes_GET_SIZE(stream->body) && _PyBytes_Resize(&stream->body, stream->len) < 0)
            return fail(self);
        message = stream->body;
        stream->body = NULL;
    }
    if (message == NULL)
        return fail(self);
    PyObject *path = stream->path != NULL ? Py_NewRef(stream->path) : PyBytes_FromStringAndSize("", 0);
    if (path == NULL) {
        Py_DECREF(message);
        return fail(self);
    }
    PyObject *call = Py_BuildValue("(iNON)", stream->id, path, stream->metadata, message);
    if (call == NULL)
        return fail(self);
    stream->handed = 1;
    int rc = PyList_Append(self->calls, call);
    Py_DECREF(call);
    return rc < 0 ? fail(self) : 0;
}

static int append_event(Session *self, PyObject *event) {
    if (event == NULL)
        return fail(self);
    int rc = PyList_Append(self->calls, event);
    Py_DECREF(event);
    return rc < 0 ? fail(self) : 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
    Session *self = (Session *)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    Stream *stream = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (stream == NULL || self->calls == NULL)
        return 0;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST && stream->path != NULL &&
        self->streaming_paths != NULL) {
        int found = PySet_Contains(self->streaming_paths, stream->path);
        if (found < 0)
            return fail(self);
        if (found) {
            stream->streaming = 1;
            stream->handed = 1;
            if (append_event(self, Py_BuildValue("(iOOO)", stream->id, stream->path, stream->metadata, Py_True)) < 0)
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    if (!end)
        return 0;
    if (stream->streaming)
        return append_event(self, Py_BuildValue("(iOy#O)", stream->id, Py_None, "", (Py_ssize_t)0, Py_True));
    if (stream->handed)
        return 0;
    return hand_over(self, stream);
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
    Session *self = (Session *)user_data;
    (void)error_code;
    Stream *stream = nghttp2_session_get_stream_user_data(session, stream_id);
    if (stream == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    int rc = 0;
    if (stream->handed && (!stream->answered || (stream->streaming && !stream->finished)) && self->calls != NULL) {
        /* the client gave up on a call Python is still running: tell it */
        PyObject *gone = Py_BuildValue("(iOOO)", stream_id, Py_None, Py_None, Py_None);
        if (gone == NULL || PyList_Append(self->calls, gone) < 0)
            rc = fail(self);
        Py_XDECREF(gone);
    }
    unlink_stream(self, stream);
    stream_free(stream);
    return rc;
}

static ssize_t read_answer(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)user_data;
    Stream *stream = source->ptr;
    Py_ssize_t body = PyBytes_GET_SIZE(stream->out);
    Py_ssize_t total = 5 + body;
    size_t n = 0;
    while (n < length && stream->sent < total) {
        if (stream->sent < 5) {
            buf[n++] = stream->prefix[stream->sent++];
            continue;
        }
        size_t chunk = (size_t)(total - stream->sent);
        if (chunk > length - n)
            chunk = length - n;
        memcpy(buf + n, PyBytes_AS_STRING(stream->out) + (stream->sent - 5), chunk);
        n += chunk;
        stream->sent += (Py_ssize_t)chunk;
    }
    if (stream->sent == total) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(session, stream_id, stream->trailers, stream->ntrailers) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

static ssize_t read_streamed(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    (void)user_data;
    Stream *stream = source->ptr;
    size_t n = stream->queued - stream->queue_read;
    if (n > length)
        n = length;
    if (n > 0) {
        memcpy(buf, stream->queue + stream->queue_read, n);
        stream->queue_read += n;
        if (stream->queue_read == stream->queued)
            stream->queued = stream->queue_read = 0;
    }
    if (stream->queued == stream->queue_read) {
        if (stream->finished) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(session, stream_id, stream->trailers, stream->ntrailers) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        } else if (n == 0) {
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* ---- the Python type ----------------------------------------------------------------------- */

static int Session_init(Session *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"max_message_bytes", "max_concurrent_streams", "streaming_paths", NULL};
    Py_ssize_t max_message = 4 * 1024 * 1024;
    unsigned int max_streams = 1024;
    PyObject *paths = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|nIO", keywords, &max_message, &max_streams, &paths))
        return -1;
    if (paths != NULL && paths != Py_None) {
        if (!PyFrozenSet_Check(paths)) {
            PyErr_SetString(PyExc_TypeError, "streaming_paths must be a frozenset of bytes");
            return -1;
        }
        Py_XSETREF(self->streaming_paths, Py_NewRef(paths));
    }
    if (self->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session is already initialised");
        return -1;
    }
    self->max_message = max_message;
    nghttp2_session_callbacks *callbacks;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
    /* Flow control by hand: a streaming call's DATA is credited back only as Python takes its
     * messages (consume()), so a client cannot push more than the window ahead of the servicer. */
    nghttp2_option *option;
    if (nghttp2_option_new(&option) != 0) {
        nghttp2_session_callbacks_del(callbacks);
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(option, 1);
    int rc = nghttp2_session_server_new2(&self->session, callbacks, self, option);
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) {
        PyErr_Format(H2Error, "nghttp2_session_server_new: %s", nghttp2_strerror(rc));
        return -1;
    }
    /* A larger flow-control window than HTTP/2's 64 KiB default: tensors of a few MiB arrive
     * without waiting for a WINDOW_UPDATE round trip per 64 KiB. */
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    rc = nghttp2_submit_settings(self->session, NGHTTP2_FLAG_NONE, settings, 2);
    if (rc == 0)
        rc = nghttp2_session_set_local_window_size(self->session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    if (rc != 0) {
        PyErr_Format(H2Error, "nghttp2 settings: %s", nghttp2_strerror(rc));
        return -1;
    }
    return 0;
}

static void Session_dealloc(Session *self) {
    if (self->session != NULL) {
        /* nghttp2_session_del frees its own stream records, not their user data: free ours after */
        self->calls = NULL;
        nghttp2_session_del(self->session);
        self->session = NULL;
    }
    while (self->streams != NULL) {
        Stream *stream = self->streams;
        self->streams = stream->next;
        stream_free(stream);
    }
    Py_CLEAR(self->streaming_paths);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(Session *self) {
    if (self->session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Session_feed(Session *self, PyObject *arg) {
    if (!ready(self))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *calls = PyList_New(0);
    if (calls == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->calls = calls;
    self->failed = 0;
    ssize_t rc = nghttp2_session_mem_recv(self->session, view.buf, (size_t)view.len);
    self->calls = NULL;
    PyBuffer_Release(&view);
    if (self->failed) {
        Py_DECREF(calls);
        if (!PyErr_Occurred())
            PyErr_SetString(H2Error, "an HTTP/2 callback failed");
        return NULL;
    }
    if (rc < 0) {
        Py_DECREF(calls);
        PyErr_Format(H2Error, "%s", nghttp2_strerror((int)rc));
        return NULL;
    }
    return calls;
}

static int pair_at(PyObject *pairs, Py_ssize_t index, PyObject **name, PyObject **value) {
    PyObject *pair = PySequence_Fast_GET_ITEM(pairs, index);
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
        PyErr_SetString(PyExc_TypeError, "trailers must be (bytes, bytes) pairs");
        return -1;
    }
    *name = PyTuple_GET_ITEM(pair, 0);
    *value = PyTuple_GET_ITEM(pair, 1);
    return 0;
}

static void set_nv(nghttp2_nv *nv, const char *name, size_t namelen, const char *value, size_t valuelen) {
    nv->name = (uint8_t *)name;
    nv->namelen = namelen;
    nv->value = (uint8_t *)value;
    nv->valuelen = valuelen;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

#define STATUS_200 ":status", 7, "200", 3
#define CONTENT_TYPE "content-type", 12, "application/grpc", 16

/* Copy (name, value) pairs into stream->trailers, to be submitted after the last DATA. */
static int keep_trailers(Stream *stream, PyObject *pairs) {
    Py_ssize_t count = PySequence_Fast_GET_SIZE(pairs);
    size_t bytes = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name, *value;
        if (pair_at(pairs, i, &name, &value) < 0)
            return -1;
        bytes += (size_t)(PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value));
    }
    PyMem_Free(stream->trailers);
    PyMem_Free(stream->trailer_bytes);
    stream->trailers = PyMem_Calloc((size_t)count + 1, sizeof(nghttp2_nv));
    stream->trailer_bytes = PyMem_Malloc(bytes + 1);
    if (stream->trailers == NULL || stream->trailer_bytes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    char *at = stream->trailer_bytes;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name, *value;
        pair_at(pairs, i, &name, &value);
        size_t namelen = (size_t)PyBytes_GET_SIZE(name), valuelen = (size_t)PyBytes_GET_SIZE(value);
        memcpy(at, PyBytes_AS_STRING(name), namelen);
        memcpy(at + namelen, PyBytes_AS_STRING(value), valuelen);
        set_nv(&stream->trailers[i], at, namelen, at + namelen, valuelen);
        at += namelen + valuelen;
    }
    stream->ntrailers = (size_t)count;
    return 0;
}

/* The answer's HEADERS (200, application/grpc), its DATA read from the stream by ``read``. */
static int submit_with_data(Session *self, Stream *stream, nghttp2_data_source_read_callback read) {
    nghttp2_nv nva[2];
    set_nv(&nva[0], STATUS_200);
    set_nv(&nva[1], CONTENT_TYPE);
    nghttp2_data_provider provider;
    provider.source.ptr = stream;
    provider.read_callback = read;
    return nghttp2_submit_response(self->session, stream->id, nva, 2, &provider);
}

static PyObject *Session_respond(Session *self, PyObject *args) {
    int stream_id;
    PyObject *message, *trailers;
    if (!ready(self) || !PyArg_ParseTuple(args, "iOO", &stream_id, &message, &trailers))
        return NULL;
    if (message != Py_None && !PyBytes_Check(message)) {
        PyErr_SetString(PyExc_TypeError, "message must be bytes or None");
        return NULL;
    }
    Stream *stream = nghttp2_session_get_stream_user_data(self->session, stream_id);
    if (stream == NULL || stream->answered)
        Py_RETURN_FALSE;
    PyObject *pairs = PySequence_Fast(trailers, "trailers must be a sequence of (bytes, bytes) pairs");
    if (pairs == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(pairs);
    PyObject *result = NULL;
    int rc;
    if (message == Py_None) {
        /* trailers-only: one HEADERS frame with END_STREAM carries the status */
        nghttp2_nv *nva = PyMem_Calloc((size_t)count + 2, sizeof(nghttp2_nv));
        if (nva == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        set_nv(&nva[0], STATUS_200);
        set_nv(&nva[1], CONTENT_TYPE);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *name, *value;
            if (pair_at(pairs, i, &name, &value) < 0) {
                PyMem_Free(nva);
                goto done;
            }
            set_nv(&nva[i + 2], PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name), PyBytes_AS_STRING(value),
                   (size_t)PyBytes_GET_SIZE(value));
        }
        rc = nghttp2_submit_response(self->session, stream_id, nva, (size_t)count + 2, NULL);
        PyMem_Free(nva);
    } else {
        /* the trailers are submitted by read_answer once the last byte of DATA is out: keep a copy */
        if (keep_trailers(stream, pairs) < 0)
            goto done;
        Py_ssize_t length = PyBytes_GET_SIZE(message);
        if (length > 0xFFFFFFFFLL) {
            PyErr_SetString(PyExc_ValueError, "a gRPC message is at most 4 GiB");
            goto done;
        }
        stream->prefix[0] = 0; /* not compressed */
        stream->prefix[1] = (unsigned char)((length >> 24) & 0xFF);
        stream->prefix[2] = (unsigned char)((length >> 16) & 0xFF);
        stream->prefix[3] = (unsigned char)((length >> 8) & 0xFF);
        stream->prefix[4] = (unsigned char)(length & 0xFF);
        stream->out = Py_NewRef(message);
        stream->sent = 0;
        rc = submit_with_data(self, stream, read_answer);
    }
    if (rc != 0) {
        result = Py_NewRef(Py_False);  /* the stream is closing or gone: nothing to answer */
        goto done;
    }
    stream->answered = 1;
    result = Py_NewRef(Py_True);
done:
    Py_DECREF(pairs);
    return result;
}

/* start(stream_id) -> bool: the answer's HEADERS now; its messages follow with send(), then finish(). */
static PyObject *Session_start(Session *self, PyObject *args) {
    int stream_id;
    if (!ready(self) || !PyArg_ParseTuple(args, "i", &stream_id))
        return NULL;
    Stream *stream = nghttp2_session_get_stream_user_data(self->session, stream_id);
    if (stream == NULL || stream->answered)
        Py_RETURN_FALSE;
    if (submit_with_data(self, stream, read_streamed) != 0)
        Py_RETURN_FALSE;
    stream->answered = 1;
    Py_RETURN_TRUE;
}

/* send(stream_id, message) -> bool: one message of a started answer (framed here). */
static PyObject *Session_send(Session *self, PyObject *args) {
    int stream_id;
    Py_buffer view;
    if (!ready(self) || !PyArg_ParseTuple(args, "iy*", &stream_id, &view))
        return NULL;
    Stream *stream = nghttp2_session_get_stream_user_data(self->session, stream_id);
    if (stream == NULL || !stream->answered || stream->finished || stream->out != NULL) {
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }
    size_t needed = stream->queued + 5 + (size_t)view.len;
    if (needed > stream->queue_cap) {
        size_t capacity = stream->queue_cap ? stream->queue_cap * 2 : 4096;
        while (capacity < needed)
            capacity *= 2;
        char *grown = PyMem_Realloc(stream->queue, capacity);
        if (grown == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        stream->queue = grown;
        stream->queue_cap = capacity;
    }
    unsigned char *at = (unsigned char *)stream->queue + stream->queued;
    size_t length = (size_t)view.len;
    at[0] = 0;
    at[1] = (unsigned char)((length >> 24) & 0xFF);
    at[2] = (unsigned char)((length >> 16) & 0xFF);
    at[3] = (unsigned char)((length >> 8) & 0xFF);
    at[4] = (unsigned char)(length & 0xFF);
    memcpy(at + 5, view.buf, length);
    stream->queued = needed;
    PyBuffer_Release(&view);
    nghttp2_session_resume_data(self->session, stream_id);
    Py_RETURN_TRUE;
}

/* finish(stream_id, trailers) -> bool: end a started answer with its trailers. */
static PyObject *Session_finish(Session *self, PyObject *args) {
    int stream_id;
    PyObject *trailers;
    if (!ready(self) || !PyArg_ParseTuple(args, "iO", &stream_id, &trailers))
        return NULL;
    Stream *stream = nghttp2_session_get_stream_user_data(self->session, stream_id);
    if (stream == NULL || !stream->answered || stream->finished || stream->out != NULL)
        Py_RETURN_FALSE;
    PyObject *pairs = PySequence_Fast(trailers, "trailers must be a sequence of (bytes, bytes) pairs");
    if (pairs == NULL)
        return NULL;
    int rc = keep_trailers(stream, pairs);
    Py_DECREF(pairs);
    if (rc < 0)
        return NULL;
    stream->finished = 1;
    nghttp2_session_resume_data(self->session, stream_id);
    Py_RETURN_TRUE;
}

static PyObject *Session_data_to_send(Session *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t used = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(self->session, &data);
        if (n < 0) {
            Py_XDECREF(out);
            PyErr_Format(H2Error, "%s", nghttp2_strerror((int)n));
            return NULL;
        }
        if (n == 0)
            break;
        if (out == NULL) {
            out = PyBytes_FromStringAndSize(NULL, n < 16384 ? 16384 : n);
            if (out == NULL)
                return NULL;
        } else if (used + n > PyBytes_GET_SIZE(out)) {
            Py_ssize_t capacity = PyBytes_GET_SIZE(out) * 2;
            if (capacity < used + n)
                capacity = used + n;
            if (_PyBytes_Resize(&out, capacity) < 0)
                return NULL;
        }
        memcpy(PyBytes_AS_STRING(out) + used, data, (size_t)n);
        used += n;
    }
    if (out == NULL)
        return PyBytes_FromStringAndSize("", 0);
    if (used != PyBytes_GET_SIZE(out) && _PyBytes_Resize(&out, used) < 0)
        return NULL;
    return out;
}

/* consume(stream_id, nbytes): a streaming call's DATA was taken; credit the window back. */
static PyObject *Session_consume(Session *self, PyObject *args) {
    int stream_id;
    Py_ssize_t nbytes;
    if (!ready(self) || !PyArg_ParseTuple(args, "in", &stream_id, &nbytes))
        return NULL;
    if (nbytes > 0 && nghttp2_session_get_stream_user_data(self->session, stream_id) != NULL)
        nghttp2_session_consume(self->session, stream_id, (size_t)nbytes);
    Py_RETURN_NONE;
}

static PyObject *Session_want_read(Session *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    return PyBool_FromLong(nghttp2_session_want_read(self->session));
}

static PyObject *Session_want_write(Session *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    return PyBool_FromLong(nghttp2_session_want_write(self->session));
}

static PyObject *Session_shutdown_notice(Session *self, PyObject *Py_UNUSED(ignored)) {
    if (!ready(self))
        return NULL;
    int rc = nghttp2_submit_shutdown_notice(self->session);
    if (rc != 0 && rc != NGHTTP2_ERR_INVALID_STATE) {
        PyErr_Format(H2Error, "%s", nghttp2_strerror(rc));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Session_goaway(Session *self, PyObject *args) {
    unsigned int code = NGHTTP2_NO_ERROR;
    if (!ready(self) || !PyArg_ParseTuple(args, "|I", &code))
        return NULL;
    int last = nghttp2_session_get_last_proc_stream_id(self->session);
    int rc = nghttp2_submit_goaway(self->session, NGHTTP2_FLAG_NONE, last, code, NULL, 0);
    if (rc != 0) {
        PyErr_Format(H2Error, "%s", nghttp2_strerror(rc));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Session_methods[] = {
    {"feed", (PyCFunction)Session_feed, METH_O, "Take bytes read from the peer; return the calls they completed."},
    {"respond", (PyCFunction)Session_respond, METH_VARARGS, "Answer a call: respond(stream_id, message, trailers)."},
    {"start", (PyCFunction)Session_start, METH_VARARGS, "Start a streamed answer: start(stream_id)."},
    {"send", (PyCFunction)Session_send, METH_VARARGS, "One message of a streamed answer: send(stream_id, message)."},
    {"finish", (PyCFunction)Session_finish, METH_VARARGS, "End a streamed answer: finish(stream_id, trailers)."},
    {"data_to_send", (PyCFunction)Session_data_to_send, METH_NOARGS, "The bytes to write to the peer now."},
    {"consume", (PyCFunction)Session_consume, METH_VARARGS, "Credit back a streaming call's DATA."},
    {"want_read", (PyCFunction)Session_want_read, METH_NOARGS, "Whether the session still reads."},
    {"want_write", (PyCFunction)Session_want_write, METH_NOARGS, "Whether the session has something to write."},
    {"shutdown_notice", (PyCFunction)Session_shutdown_notice, METH_NOARGS, "Send a graceful GOAWAY."},
    {"goaway", (PyCFunction)Session_goaway, METH_VARARGS, "Send the final GOAWAY."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "servekit.grpc.native._h2.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One HTTP/2 server connection (nghttp2, memory mode) answering gRPC unary calls.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h2", "HTTP/2 for servekit's native gRPC front end (nghttp2).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h2(void) {
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    H2Error = PyErr_NewException("servekit.grpc.native._h2.H2Error", NULL, NULL);
    if (H2Error == NULL || PyModule_AddObjectRef(m, "H2Error", H2Error) < 0 ||
        PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddStringConstant(m, "NGHTTP2_VERSION", NGHTTP2_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
