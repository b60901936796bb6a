/* berthctl top and status --watch: the daemon's figures over time, from successive
 * `status --json` answers of the admin socket. */
#ifndef BERTHCTL_TOP_H
#define BERTHCTL_TOP_H

/* The live view on a terminal, redrawn every second until q or Ctrl-C; the terminal is
 * restored on the way out. Returns berthctl's exit status (0, or 69 when no daemon
 * answers at the start, 64 when stdin/stdout is not a terminal). */
int top_run(const char *sock, long timeout_s);
/* The same figures as lines for scripts, every `interval_s` seconds, until the daemon goes
 * away (69) or SIGINT/SIGTERM/SIGPIPE (0). */
int watch_run(const char *sock, long timeout_s, long interval_s);

#endif
