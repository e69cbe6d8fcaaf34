/* SPDX-License-Identifier: MIT */
/*
 * listen.h - the store's listening sockets, and the rule that one port serves
 * one store.
 *
 * With several reactors each has its own SO_REUSEPORT listener, so that the
 * kernel spreads new connections over them. SO_REUSEPORT would also let any
 * other process of the same user join the group and take a share of the
 * connections: two stores on one port, a split brain no client can see. So:
 *
 *  - after binding, listen_open() asks the kernel (NETLINK_SOCK_DIAG) for
 *    every TCP listener on the port; one that is not ours and whose address
 *    overlaps ours makes it fail with -EADDRINUSE, as a plain bind would;
 *  - a classic-BPF reuseport program steers every connection to one of the
 *    group's first n sockets, which are ours (a group keeps its sockets in the
 *    order they joined), so a process that joins later (one that does not
 *    check, or one in the instant before it sees us and leaves) never gets a
 *    connection of ours.
 *
 * A single listener (one reactor, or --accept single) has no SO_REUSEPORT,
 * and the kernel itself refuses a second one, exactly as with PyTorch's
 * server.
 *
 * Start-up only; main() calls these before any reactor runs.
 */
#ifndef RS_SERVER_LISTEN_H
#define RS_SERVER_LISTEN_H

#include <stddef.h>
#include <stdint.h>

/*
 * Bind and listen @n sockets on @host (NULL: dual-stack wildcard) and
 * *@port (0: a free port, written back), SO_REUSEPORT when @n > 1, and
 * make sure no other process listens on that port. Fills @fds[0..n-1].
 * Returns 0 or -errno (then nothing is left open); on -EADDRINUSE, @who
 * describes the process holding the port when it can be found ("" if not;
 * a NULL @who skips the search, a scan of every process's descriptors).
 */
int listen_open(const char *host, uint16_t *port, int backlog, uint32_t n,
		int *fds, char *who, size_t wholen);

/*
 * Take over a socket handed to us (--listen-fd, systemd): it must be a TCP
 * socket; one that is bound but not listening yet gets listen(@backlog), as
 * PyTorch's TCPStore(master_listen_fd=) does. The fd is made non-blocking.
 * Returns 0, -ENOTSOCK / -EPROTONOSUPPORT for a socket that is not TCP,
 * -EDESTADDRREQ for one that is not bound to a port, or -errno.
 */
int listen_adopt(int fd, int backlog);

/*
 * Describe the process (other than us) that has a TCP listener on @port,
 * as "pid 1234 (name)", into @out ("" when none is found). For error
 * messages only.
 */
void listen_port_holder(uint16_t port, char *out, size_t len);

#endif
