/*
 * Socket options Node.js does not expose, for the Hypha node agent (Linux only).
 *
 *   getOriginalDst(fd)            -> { address, port, family }   SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST
 *   setTransparent(fd, on)        IP_TRANSPARENT / IPV6_TRANSPARENT
 *   setFreebind(fd, on)           IP_FREEBIND / IPV6_FREEBIND
 *   setMark(fd, mark), getMark(fd)  SO_MARK
 *   connectTransparent(localAddr, localPort, remoteAddr, remotePort, mark, freebind, cb, netns?) -> cancel()
 *
 * Invariants:
 * - Plain N-API (ABI-stable): built against any Node's headers, loads in any later Node.
 * - Errors are thrown (or passed to cb) as Error objects whose `code` is the errno name
 *   ("EPERM") and whose message names the failing call; the TypeScript wrapper adds hints.
 * - connectTransparent never blocks the event loop: the socket is created non-blocking with
 *   IP_TRANSPARENT (and SO_MARK) set BEFORE bind and connect, then a uv_poll handle waits for
 *   writability. The poll handle is stopped and closed (which drops its epoll registration)
 *   before the callback runs, so the fd can be adopted by a net.Socket without two libuv watchers
 *   on one fd. Exactly one of {callback, cancel} releases the fd: after success it belongs to the
 *   caller, after an error or a cancel it is closed here.
 * - With `netns` (a path such as /run/netns/NAME) the socket is created inside that network
 *   namespace: the calling thread enters it for the socket() call only and returns at once
 *   (a socket stays bound to the namespace it was created in; bind and connect use it). Failing
 *   to return to the original namespace would leave the event loop thread in the wrong network,
 *   so that aborts the process rather than continue silently.
 */
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IP_FREEBIND
#define IP_FREEBIND 15
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef SO_MARK
#define SO_MARK 36
#endif

static const char *errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case ENOTCONN: return "ENOTCONN";
    case ECANCELED: return "ECANCELED";
    default: return "EUNKNOWN";
  }
}

static napi_value make_error(napi_env env, int err, const char *what) {
  char message[256];
  snprintf(message, sizeof message, "%s: %s failed: %s", errno_name(err), what, strerror(err));
  napi_value code, msg, error, num;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_value syscall;
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &syscall);
  napi_set_named_property(env, error, "syscall", syscall);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *what) {
  napi_throw(env, make_error(env, err, what));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG", message);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return 0;
  return argc >= want;
}

static int get_fd(napi_env env, napi_value value, int *fd) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) return 0;
  if (napi_get_value_int32(env, value, fd) != napi_ok) return 0;
  return *fd >= 0;
}

/* Family of the socket's own address; AF_INET6 sockets carrying IPv4 (v4-mapped) report AF_INET. */
static int socket_family(int fd, int *family, int *mapped) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  *mapped = 0;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
  *family = ss.ss_family;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) *mapped = 1;
  }
  return 0;
}

static napi_value address_object(napi_env env, const struct sockaddr *sa) {
  char text[INET6_ADDRSTRLEN];
  int port, family;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, text, sizeof text);
    port = ntohs(s4->sin_port);
    family = 4;
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, text, sizeof text);
    port = ntohs(s6->sin6_port);
    family = 6;
  }
  napi_value obj, address, portv, familyv;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address);
  napi_create_int32(env, port, &portv);
  napi_create_int32(env, family, &familyv);
  napi_set_named_property(env, obj, "address", address);
  napi_set_named_property(env, obj, "port", portv);
  napi_set_named_property(env, obj, "family", familyv);
  return obj;
}

static napi_value get_original_dst(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd, family, mapped;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], &fd)) return throw_type(env, "getOriginalDst(fd): fd must be a non-negative integer");
  if (socket_family(fd, &family, &mapped) != 0) return throw_errno(env, errno, "getsockname");
  if (family == AF_INET || mapped) {
    /* IPv4 connections, also on a dual-stack socket: conntrack answers at SOL_IP. */
    struct sockaddr_in dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_ORIGINAL_DST)");
    return address_object(env, (struct sockaddr *)&dst);
  }
  if (family == AF_INET6) {
    struct sockaddr_in6 dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0) return throw_errno(env, errno, "getsockopt(IP6T_SO_ORIGINAL_DST)");
    return address_object(env, (struct sockaddr *)&dst);
  }
  return throw_errno(env, EAFNOSUPPORT, "getOriginalDst");
}

static int get_bool(napi_env env, napi_value value, int fallback) {
  bool b;
  if (napi_get_value_bool(env, value, &b) != napi_ok) return fallback;
  return b ? 1 : 0;
}

/* Sets the IPv4 or IPv6 flavour of an option, matching the socket's family. */
static napi_value set_family_flag(napi_env env, napi_callback_info info, int opt4, int opt6, const char *name4, const char *name6) {
  napi_value argv[2];
  size_t argc = 2;
  int fd, family, mapped;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || !get_fd(env, argv[0], &fd)) return throw_type(env, "fd must be a non-negative integer");
  int on = argc >= 2 ? get_bool(env, argv[1], 1) : 1;
  if (socket_family(fd, &family, &mapped) != 0) return throw_errno(env, errno, "getsockname");
  int rc = family == AF_INET6 ? setsockopt(fd, SOL_IPV6, opt6, &on, sizeof on) : setsockopt(fd, SOL_IP, opt4, &on, sizeof on);
  if (rc != 0) return throw_errno(env, errno, family == AF_INET6 ? name6 : name4);
  return NULL;
}

static napi_value set_transparent(napi_env env, napi_callback_info info) {
  return set_family_flag(env, info, IP_TRANSPARENT, IPV6_TRANSPARENT, "setsockopt(IP_TRANSPARENT)", "setsockopt(IPV6_TRANSPARENT)");
}

static napi_value set_freebind(napi_env env, napi_callback_info info) {
  return set_family_flag(env, info, IP_FREEBIND, IPV6_FREEBIND, "setsockopt(IP_FREEBIND)", "setsockopt(IPV6_FREEBIND)");
}

static napi_value set_mark(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t mark;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd)) return throw_type(env, "setMark(fd, mark): fd must be a non-negative integer");
  if (napi_get_value_uint32(env, argv[1], &mark) != napi_ok) return throw_type(env, "setMark(fd, mark): mark must be a 32-bit unsigned integer");
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) return throw_errno(env, errno, "setsockopt(SO_MARK)");
  return NULL;
}

static napi_value get_mark(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int fd;
  uint32_t mark = 0;
  socklen_t len = sizeof mark;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], &fd)) return throw_type(env, "getMark(fd): fd must be a non-negative integer");
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_MARK)");
  napi_create_uint32(env, mark, &result);
  return result;
}

/*
 * setSendBuffer(fd, bytes) -> effective size. SO_SNDBUFFORCE (CAP_NET_ADMIN) passes the
 * net.core.wmem_max cap; without the capability SO_SNDBUF sets what the cap allows. Returns what
 * the kernel holds afterwards (it doubles the request to cover its own bookkeeping).
 */
static napi_value set_send_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  int fd, bytes, effective = 0;
  socklen_t len = sizeof effective;
  if (!get_args(env, info, 2, argv) || !get_fd(env, argv[0], &fd)) return throw_type(env, "setSendBuffer(fd, bytes): fd must be a non-negative integer");
  if (napi_get_value_int32(env, argv[1], &bytes) != napi_ok || bytes <= 0) return throw_type(env, "setSendBuffer(fd, bytes): bytes must be a positive 32-bit integer");
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0) {
    if (errno != EPERM) return throw_errno(env, errno, "setsockopt(SO_SNDBUFFORCE)");
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes) != 0) return throw_errno(env, errno, "setsockopt(SO_SNDBUF)");
  }
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &effective, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_SNDBUF)");
  napi_create_int32(env, effective, &result);
  return result;
}

/* ---- connectTransparent ---------------------------------------------------------------- */

typedef struct {
  napi_env env;
  uv_poll_t poll;
  int fd;
  napi_ref callback;
  napi_async_context context;
  int done;      /* callback called or cancelled: the poll is closed */
  int closed;    /* uv close callback ran */
  int finalized; /* the JS cancel function was garbage collected */
} connect_req;

static void maybe_free(connect_req *req) {
  if (req->closed && req->finalized) free(req);
}

static void on_poll_closed(uv_handle_t *handle) {
  connect_req *req = (connect_req *)handle->data;
  req->closed = 1;
  maybe_free(req);
}

/* Stops and closes the poll handle; uv_close drops the epoll registration synchronously. */
static void finish(connect_req *req) {
  req->done = 1;
  uv_poll_stop(&req->poll);
  uv_close((uv_handle_t *)&req->poll, on_poll_closed);
}

static void release_js(connect_req *req) {
  if (req->callback) {
    napi_delete_reference(req->env, req->callback);
    req->callback = NULL;
  }
  if (req->context) {
    napi_async_destroy(req->env, req->context);
    req->context = NULL;
  }
}

static void on_writable(uv_poll_t *handle, int status, int events) {
  connect_req *req = (connect_req *)handle->data;
  if (req->done) return;
  /* libuv reports POLLERR as UV_EBADF; the socket's own error says what really happened. */
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(req->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0 && status < 0) err = -status;
  finish(req);

  napi_env env = req->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[2], callback, global, result;
  napi_get_undefined(env, &argv[0]);
  napi_get_undefined(env, &argv[1]);
  if (err != 0) {
    close(req->fd);
    argv[0] = make_error(env, err, "connect");
  } else {
    napi_create_int32(env, req->fd, &argv[1]);
  }
  req->fd = -1;
  napi_get_reference_value(env, req->callback, &callback);
  napi_get_global(env, &global);
  napi_make_callback(env, req->context, global, callback, 2, argv, &result);
  release_js(req);
  napi_close_handle_scope(env, scope);
}

static napi_value cancel_connect(napi_env env, napi_callback_info info) {
  connect_req *req;
  napi_get_cb_info(env, info, NULL, NULL, NULL, (void **)&req);
  if (req->done) return NULL;
  finish(req);
  close(req->fd);
  req->fd = -1;
  release_js(req);
  return NULL;
}

static void cancel_finalized(napi_env env, void *data, void *hint) {
  connect_req *req = (connect_req *)data;
  req->finalized = 1;
  maybe_free(req);
}

static int parse_sockaddr(const char *text, uint32_t port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    *len = sizeof *s6;
    return AF_INET6;
  }
  return -1;
}

/* Enters the network namespace at `path` on this thread; *saved receives the way back. */
static int enter_netns(const char *path, int *saved) {
  *saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (*saved < 0) return errno;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(*saved);
    return err;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    close(target);
    close(*saved);
    return err;
  }
  close(target);
  return 0;
}

static void leave_netns(int saved) {
  if (setns(saved, CLONE_NEWNET) != 0) {
    fprintf(stderr, "hypha_native: cannot return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(saved);
}

/* connectTransparent(localAddress, localPort, remoteAddress, remotePort, mark, freebind, cb) -> cancel */
static napi_value connect_transparent(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  char netns_path[4096];
  int has_netns = 0;
  char local_text[INET6_ADDRSTRLEN + 1], remote_text[INET6_ADDRSTRLEN + 1];
  size_t n;
  uint32_t local_port, remote_port, mark;
  napi_valuetype cb_type;
  size_t argc = 8;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7) return throw_type(env, "connectTransparent needs 7 or 8 arguments");
  if (argc >= 8) {
    napi_valuetype t;
    napi_typeof(env, argv[7], &t);
    if (t == napi_string) {
      if (napi_get_value_string_utf8(env, argv[7], netns_path, sizeof netns_path, &n) != napi_ok || n == 0 || n >= sizeof netns_path - 1) {
        return throw_type(env, "netns must be a path");
      }
      has_netns = 1;
    } else if (t != napi_undefined && t != napi_null) {
      return throw_type(env, "netns must be a path string");
    }
  }
  if (napi_get_value_string_utf8(env, argv[0], local_text, sizeof local_text, &n) != napi_ok) return throw_type(env, "localAddress must be a string");
  if (napi_get_value_uint32(env, argv[1], &local_port) != napi_ok || local_port > 65535) return throw_type(env, "localPort must be 0-65535");
  if (napi_get_value_string_utf8(env, argv[2], remote_text, sizeof remote_text, &n) != napi_ok) return throw_type(env, "remoteAddress must be a string");
  if (napi_get_value_uint32(env, argv[3], &remote_port) != napi_ok || remote_port == 0 || remote_port > 65535) return throw_type(env, "remotePort must be 1-65535");
  if (napi_get_value_uint32(env, argv[4], &mark) != napi_ok) return throw_type(env, "mark must be a 32-bit unsigned integer");
  int freebind = get_bool(env, argv[5], 0);
  if (napi_typeof(env, argv[6], &cb_type) != napi_ok || cb_type != napi_function) return throw_type(env, "callback must be a function");

  struct sockaddr_storage local, remote;
  socklen_t local_len, remote_len;
  int family = parse_sockaddr(remote_text, remote_port, &remote, &remote_len);
  if (family < 0) return throw_type(env, "remoteAddress is not an IPv4 or IPv6 address");
  if (parse_sockaddr(local_text, local_port, &local, &local_len) != family) return throw_type(env, "localAddress must be an address of the same family as remoteAddress");

  int saved_netns = -1;
  if (has_netns) {
    int err = enter_netns(netns_path, &saved_netns);
    if (err != 0) return throw_errno(env, err, "setns(netns)");
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int socket_errno = errno;
  if (has_netns) leave_netns(saved_netns);
  if (fd < 0) return throw_errno(env, socket_errno, "socket");
  int on = 1;
  int level = family == AF_INET6 ? SOL_IPV6 : SOL_IP;
  if (setsockopt(fd, level, family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, &on, sizeof on) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, family == AF_INET6 ? "setsockopt(IPV6_TRANSPARENT)" : "setsockopt(IP_TRANSPARENT)");
  }
  if (freebind && setsockopt(fd, level, family == AF_INET6 ? IPV6_FREEBIND : IP_FREEBIND, &on, sizeof on) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "setsockopt(IP_FREEBIND)");
  }
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "setsockopt(SO_MARK)");
  }
  /* A fixed source port may still be held by a TIME_WAIT socket of an earlier connection. */
  if (local_port != 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&local, local_len) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "bind");
  }
  if (connect(fd, (struct sockaddr *)&remote, remote_len) != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "connect");
  }

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    return throw_type(env, "no event loop");
  }
  connect_req *req = calloc(1, sizeof *req);
  if (!req) {
    close(fd);
    return throw_errno(env, ENOMEM, "calloc");
  }
  req->env = env;
  req->fd = fd;
  int rc = uv_poll_init_socket(loop, &req->poll, fd);
  if (rc != 0) {
    close(fd);
    free(req);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  req->poll.data = req;
  napi_value resource_name, cancel;
  napi_create_string_utf8(env, "hypha.connectTransparent", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &req->context);
  napi_create_reference(env, argv[6], 1, &req->callback);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel_connect, req, &cancel);
  napi_add_finalizer(env, cancel, req, cancel_finalized, NULL, NULL);
  uv_poll_start(&req->poll, UV_WRITABLE, on_writable);
  return cancel;
}

#define EXPORT(name, fn)                                                  \
  do {                                                                    \
    napi_value f;                                                         \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);      \
    napi_set_named_property(env, exports, name, f);                       \
  } while (0)

void hypha_register_fd_passing(napi_env env, napi_value exports); /* fd_passing.c */

static napi_value init(napi_env env, napi_value exports) {
  hypha_register_fd_passing(env, exports);
  EXPORT("getOriginalDst", get_original_dst);
  EXPORT("setTransparent", set_transparent);
  EXPORT("setFreebind", set_freebind);
  EXPORT("setMark", set_mark);
  EXPORT("getMark", get_mark);
  EXPORT("setSendBuffer", set_send_buffer);
  EXPORT("connectTransparent", connect_transparent);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
