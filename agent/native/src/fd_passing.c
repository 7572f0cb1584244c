/*
 * Passing listening sockets between two agent processes (the zero-drop upgrade hand-off), with
 * SCM_RIGHTS over a Unix stream socket. Node passes handles only to a child over its IPC channel;
 * the old and new agents are not parent and child, so this is the one piece done natively.
 *
 *   sendFds(fd, fds, message)      one sendmsg(): `message` as the data, `fds` as SCM_RIGHTS
 *   receiveFds(path, request, timeoutMs, cb(err, {fd, fds, message}))
 *       on the libuv thread pool: connect to the Unix socket `path`, send `request`, read one
 *       newline-terminated reply and the descriptors that came with it. `fd` is the connected
 *       Unix socket (the caller wraps it in a net.Socket to go on talking), `fds` the received
 *       descriptors (close-on-exec), `message` the reply line without its newline.
 *
 * Invariants:
 * - The sender's socket belongs to libuv (non-blocking) and nothing else is queued on it when
 *   sendFds runs (the protocol sends the descriptors as the first bytes of the reply), so a single
 *   sendmsg either takes the whole small message or fails; a short write is reported as EAGAIN.
 * - The receiver never blocks the event loop: the blocking connect/send/recv run on the thread pool
 *   with SO_RCVTIMEO/SO_SNDTIMEO as the deadline. On any failure every descriptor it got is closed.
 * - Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC): a process the agent spawns never
 *   inherits a listening socket.
 */
#include <node_api.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 16
#define MAX_MESSAGE 65536

static napi_value fd_error(napi_env env, int err, const char *what) {
  char message[320];
  snprintf(message, sizeof message, "%s failed: %s", what, strerror(err));
  napi_value code, msg, error, num;
  const char *name = err == ENOENT ? "ENOENT" : err == ECONNREFUSED ? "ECONNREFUSED"
                   : err == EAGAIN ? "EAGAIN" : err == ETIMEDOUT ? "ETIMEDOUT"
                   : err == EPIPE ? "EPIPE" : err == ECONNRESET ? "ECONNRESET"
                   : err == EPROTO ? "EPROTO" : err == EBADF ? "EBADF" : err == EINVAL ? "EINVAL"
                   : err == ENAMETOOLONG ? "ENAMETOOLONG" : err == EACCES ? "EACCES" : "EUNKNOWN";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  return error;
}

static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int fd = -1;
  uint32_t count = 0;
  bool is_array = false;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || count > MAX_FDS) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sendFds(fd, fds[<=16], message)");
    return NULL;
  }
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    if (napi_get_value_int32(env, v, &fds[i]) != napi_ok || fds[i] < 0) {
      napi_throw_type_error(env, "ERR_INVALID_ARG", "sendFds: every descriptor must be a number >= 0");
      return NULL;
    }
  }
  size_t len = 0;
  napi_get_value_string_utf8(env, argv[2], NULL, 0, &len);
  if (len == 0 || len > MAX_MESSAGE) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sendFds: message must be 1..65536 bytes");
    return NULL;
  }
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    napi_throw(env, fd_error(env, ENOMEM, "sendFds malloc"));
    return NULL;
  }
  napi_get_value_string_utf8(env, argv[2], buf, len + 1, &len);

  struct iovec iov = {.iov_base = buf, .iov_len = len};
  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  memset(control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (count > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  int err = errno;
  free(buf);
  if (n < 0) {
    napi_throw(env, fd_error(env, err, "sendmsg(SCM_RIGHTS)"));
    return NULL;
  }
  if ((size_t)n != len) {
    napi_throw(env, fd_error(env, EAGAIN, "sendmsg(SCM_RIGHTS) took part of the message"));
    return NULL;
  }
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_ref callback;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char *request;
  int timeout_ms;
  /* results */
  int sock;
  int fds[MAX_FDS];
  int nfds;
  char *reply;
  size_t reply_len;
  int err;
  const char *what;
} receive_req;

static void close_all(receive_req *r) {
  for (int i = 0; i < r->nfds; i++) close(r->fds[i]);
  r->nfds = 0;
  if (r->sock >= 0) close(r->sock);
  r->sock = -1;
}

static void receive_execute(napi_env env, void *data) {
  receive_req *r = data;
  r->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (r->sock < 0) {
    r->err = errno;
    r->what = "socket(AF_UNIX)";
    return;
  }
  struct timeval tv = {.tv_sec = r->timeout_ms / 1000, .tv_usec = (r->timeout_ms % 1000) * 1000};
  setsockopt(r->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(r->sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, r->path, strlen(r->path));
  if (connect(r->sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
    r->err = errno;
    r->what = "connect to the hand-off socket";
    close_all(r);
    return;
  }
  size_t want = strlen(r->request), sent = 0;
  while (sent < want) {
    ssize_t n = send(r->sock, r->request + sent, want - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r->err = n < 0 ? errno : EPIPE;
      r->what = "send the hand-off request";
      close_all(r);
      return;
    }
    sent += (size_t)n;
  }
  r->reply = malloc(MAX_MESSAGE);
  if (r->reply == NULL) {
    r->err = ENOMEM;
    r->what = "malloc";
    close_all(r);
    return;
  }
  while (r->reply_len < MAX_MESSAGE) {
    struct iovec iov = {.iov_base = r->reply + r->reply_len, .iov_len = MAX_MESSAGE - r->reply_len};
    char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t n = recvmsg(r->sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r->err = errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
      r->what = "wait for the running agent's sockets";
      close_all(r);
      return;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      int *in = (int *)CMSG_DATA(c);
      for (int i = 0; i < k; i++) {
        if (r->nfds < MAX_FDS) r->fds[r->nfds++] = in[i];
        else close(in[i]);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      r->err = EPROTO;
      r->what = "receive descriptors (more than 16, control data truncated)";
      close_all(r);
      return;
    }
    if (n == 0) {
      r->err = ECONNRESET;
      r->what = "read the hand-off reply (the running agent closed the connection)";
      close_all(r);
      return;
    }
    r->reply_len += (size_t)n;
    if (memchr(r->reply, '\n', r->reply_len) != NULL) {
      /* Back to blocking-free use by libuv: clear the timeouts (libuv sets O_NONBLOCK itself). */
      struct timeval zero = {0, 0};
      setsockopt(r->sock, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
      setsockopt(r->sock, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
      return;
    }
  }
  r->err = EPROTO;
  r->what = "read the hand-off reply (no newline in 64 KiB)";
  close_all(r);
}

static void receive_complete(napi_env env, napi_status status, void *data) {
  receive_req *r = data;
  napi_value cb, undefined, args[2];
  napi_get_reference_value(env, r->callback, &cb);
  napi_get_undefined(env, &undefined);
  if (r->err != 0 || status != napi_ok) {
    args[0] = fd_error(env, r->err != 0 ? r->err : ECANCELED, r->what ? r->what : "receiveFds");
    args[1] = undefined;
  } else {
    napi_value result, sock, fds, message;
    napi_create_object(env, &result);
    napi_create_int32(env, r->sock, &sock);
    napi_create_array_with_length(env, (size_t)r->nfds, &fds);
    for (int i = 0; i < r->nfds; i++) {
      napi_value v;
      napi_create_int32(env, r->fds[i], &v);
      napi_set_element(env, fds, (uint32_t)i, v);
    }
    char *nl = memchr(r->reply, '\n', r->reply_len);
    napi_create_string_utf8(env, r->reply, (size_t)(nl - r->reply), &message);
    napi_set_named_property(env, result, "fd", sock);
    napi_set_named_property(env, result, "fds", fds);
    napi_set_named_property(env, result, "message", message);
    args[0] = undefined;
    args[1] = result;
  }
  napi_value ignored;
  napi_call_function(env, undefined, cb, 2, args, &ignored);
  napi_delete_reference(env, r->callback);
  napi_delete_async_work(env, r->work);
  free(r->request);
  free(r->reply);
  free(r);
}

static napi_value receive_fds(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  receive_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    napi_throw(env, fd_error(env, ENOMEM, "receiveFds calloc"));
    return NULL;
  }
  r->sock = -1;
  size_t path_len = 0, req_len = 0;
  napi_valuetype cb_type = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &cb_type);
  if (argc < 4 || cb_type != napi_function ||
      napi_get_value_string_utf8(env, argv[0], r->path, sizeof r->path, &path_len) != napi_ok ||
      path_len == 0 || path_len >= sizeof r->path - 1 ||
      napi_get_value_string_utf8(env, argv[1], NULL, 0, &req_len) != napi_ok || req_len == 0 ||
      req_len > MAX_MESSAGE || napi_get_value_int32(env, argv[2], &r->timeout_ms) != napi_ok ||
      r->timeout_ms <= 0) {
    free(r);
    napi_throw_type_error(env, "ERR_INVALID_ARG",
                          "receiveFds(path (< 107 bytes), request, timeoutMs > 0, callback)");
    return NULL;
  }
  r->request = malloc(req_len + 1);
  napi_get_value_string_utf8(env, argv[1], r->request, req_len + 1, &req_len);
  napi_create_reference(env, argv[3], 1, &r->callback);
  napi_value name;
  napi_create_string_utf8(env, "hypha.receiveFds", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, receive_execute, receive_complete, r, &r->work);
  napi_queue_async_work(env, r->work);
  return NULL;
}

void hypha_register_fd_passing(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "sendFds", NAPI_AUTO_LENGTH, send_fds, NULL, &f);
  napi_set_named_property(env, exports, "sendFds", f);
  napi_create_function(env, "receiveFds", NAPI_AUTO_LENGTH, receive_fds, NULL, &f);
  napi_set_named_property(env, exports, "receiveFds", f);
}
