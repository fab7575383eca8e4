/*
 * c11_threads_shim.h - C11 threads (thrd_*, mtx_*, cnd_*) on top of pthreads, defined in the
 * test program itself so that they take the place of glibc's for librdkafka.
 *
 * Why: librdkafka makes its threads and locks with C11 threads. glibc implements those
 * by calling its internal pthread functions directly, which ThreadSanitizer (clang 14)
 * does not intercept: a thread made by thrd_create has no TSan state and crashes in its
 * first malloc, and mtx_lock/cnd_wait give TSan no happens-before edges, so the hand-over
 * of a message from a writer through librdkafka's queues to the delivery report on the
 * main thread would look like a race. Here each C11 call is the public pthread call that
 * TSan intercepts; the types are glibc's, which share the layout of the pthread ones
 * (glibc's own implementation casts them the same way). Include this in exactly one file
 * of a program that uses librdkafka; it is harmless in any build.
 */
#ifndef CLICKD_TEST_C11_THREADS_SHIM_H
#define CLICKD_TEST_C11_THREADS_SHIM_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

_Static_assert(sizeof(mtx_t) >= sizeof(pthread_mutex_t), "glibc: mtx_t is a pthread mutex");
_Static_assert(sizeof(cnd_t) >= sizeof(pthread_cond_t), "glibc: cnd_t is a pthread cond");

struct shim_start {
	thrd_start_t func;
	void *arg;
};

static void *shim_trampoline(void *p)
{
	struct shim_start s = *(struct shim_start *)p;

	free(p);
	return (void *)(intptr_t)s.func(s.arg);
}

static int shim_result(int rc)
{
	return rc == 0 ? thrd_success : rc == ENOMEM ? thrd_nomem : thrd_error;
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
	struct shim_start *s = malloc(sizeof(*s));
	int rc;

	if (!s)
		return thrd_nomem;
	s->func = func;
	s->arg = arg;
	rc = pthread_create((pthread_t *)thr, NULL, shim_trampoline, s);
	if (rc != 0)
		free(s);
	return shim_result(rc);
}

int thrd_join(thrd_t thr, int *res)
{
	void *out = NULL;
	int rc = pthread_join((pthread_t)thr, &out);

	if (rc == 0 && res)
		*res = (int)(intptr_t)out;
	return shim_result(rc);
}

int thrd_detach(thrd_t thr)
{
	return shim_result(pthread_detach((pthread_t)thr));
}

int mtx_init(mtx_t *m, int type)
{
	pthread_mutexattr_t attr;
	int rc;

	pthread_mutexattr_init(&attr);
	if (type & mtx_recursive)
		pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	rc = pthread_mutex_init((pthread_mutex_t *)m, &attr);
	pthread_mutexattr_destroy(&attr);
	return shim_result(rc);
}

int mtx_lock(mtx_t *m)
{
	return shim_result(pthread_mutex_lock((pthread_mutex_t *)m));
}

int mtx_trylock(mtx_t *m)
{
	int rc = pthread_mutex_trylock((pthread_mutex_t *)m);

	return rc == EBUSY ? thrd_busy : shim_result(rc);
}

int mtx_unlock(mtx_t *m)
{
	return shim_result(pthread_mutex_unlock((pthread_mutex_t *)m));
}

void mtx_destroy(mtx_t *m)
{
	pthread_mutex_destroy((pthread_mutex_t *)m);
}

int cnd_init(cnd_t *c)
{
	return shim_result(pthread_cond_init((pthread_cond_t *)c, NULL));
}

int cnd_signal(cnd_t *c)
{
	return shim_result(pthread_cond_signal((pthread_cond_t *)c));
}

int cnd_broadcast(cnd_t *c)
{
	return shim_result(pthread_cond_broadcast((pthread_cond_t *)c));
}

int cnd_wait(cnd_t *c, mtx_t *m)
{
	return shim_result(pthread_cond_wait((pthread_cond_t *)c, (pthread_mutex_t *)m));
}

int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
	int rc = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);

	return rc == ETIMEDOUT ? thrd_timedout : shim_result(rc);
}

void cnd_destroy(cnd_t *c)
{
	pthread_cond_destroy((pthread_cond_t *)c);
}

#endif
