/*
 * log.h - one line per record on stderr: "level=info module=http msg=\"...\" key=value".
 *
 * Never called per event on the hot path. Thread-safe: each record is one write(2).
 */
#ifndef CLICKD_LOG_H
#define CLICKD_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error|warn|info|debug"; returns 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

/* fmt is the rest of the line after msg: put key=value pairs there. */
void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(module, ...) log_write(LOG_ERROR, module, __VA_ARGS__)
#define log_warn(module, ...)  log_write(LOG_WARN, module, __VA_ARGS__)
#define log_info(module, ...)  log_write(LOG_INFO, module, __VA_ARGS__)
#define log_debug(module, ...)                                                                     \
	do {                                                                                       \
		if (log_get_level() >= LOG_DEBUG)                                                  \
			log_write(LOG_DEBUG, module, __VA_ARGS__);                                 \
	} while (0)

#endif
