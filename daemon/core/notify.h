/* systemd's notify protocol (Type=notify): a no-op when not under systemd. */
#ifndef BERTH_NOTIFY_H
#define BERTH_NOTIFY_H

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
