/* Deferred freeing for TorchSharp's Scalar handles.

   TorchSharp turns every number passed to an op (and the hidden alpha = 1 of `tensor + tensor`) into a Scalar
   object whose native handle is handed to libtorch. Nothing keeps that object alive during the native call, so a
   garbage collection on another thread can run its finalizer, which frees the c10::Scalar while libtorch is still
   reading it: an intermittent "Expected false to be true ... toFloat" error, or a silently wrong value.

   This library sits in front of libLibTorchSharp.so (it is loaded in its place by FastVideo's DllImport resolver
   and depends on it, so every other symbol resolves to the real wrapper). It redefines only
   THSTorch_dispose_scalar: a disposed Scalar is parked for a grace period and freed afterwards, by which time any
   native call that received its handle has long since read it. A Scalar is 32 bytes; even tens of thousands of
   them per second cost a few megabytes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef void (*dispose_fn)(void *);

typedef struct { void *scalar; double parked_at; } parked;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dispose_fn real_dispose;
static parked *queue;            /* ring buffer, oldest at head */
static size_t capacity, head, count;
static double grace_seconds = 0.5;
static long long parked_total, freed_total;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* a few ms of resolution is plenty */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static dispose_fn resolve_real(void)
{
    void *wrapper = dlopen("libLibTorchSharp.so", RTLD_NOW | RTLD_NOLOAD);
    dispose_fn fn = wrapper ? (dispose_fn)dlsym(wrapper, "THSTorch_dispose_scalar") : NULL;
    if (!fn) fn = (dispose_fn)dlsym(RTLD_NEXT, "THSTorch_dispose_scalar");
    return fn;
}

/* Frees the oldest parked Scalar. Caller holds the lock and count > 0. */
static void release_oldest(void)
{
    real_dispose(queue[head].scalar);
    head = (head + 1) % capacity;
    count--;
    freed_total++;
}

static int grow(void)
{
    size_t next = capacity ? capacity * 2 : 4096;
    parked *bigger = malloc(next * sizeof(parked));
    if (!bigger) return 0;
    for (size_t i = 0; i < count; i++) bigger[i] = queue[(head + i) % capacity];
    free(queue);
    queue = bigger;
    capacity = next;
    head = 0;
    return 1;
}

void THSTorch_dispose_scalar(void *scalar)
{
    if (!scalar) return;
    pthread_mutex_lock(&lock);
    if (!real_dispose) real_dispose = resolve_real();
    if (!real_dispose) { pthread_mutex_unlock(&lock); return; } /* cannot happen when linked; leaking beats crashing */
    double t = now();
    while (count > 0 && t - queue[head].parked_at >= grace_seconds) release_oldest();
    if (count == capacity && !grow()) {
        /* No memory for a bigger queue: free early rather than leak (at once when there is no queue at all). */
        if (count == 0) { real_dispose(scalar); freed_total++; parked_total++; pthread_mutex_unlock(&lock); return; }
        release_oldest();
    }
    queue[(head + count) % capacity] = (parked){ scalar, t };
    count++;
    parked_total++;
    pthread_mutex_unlock(&lock);
}

/* Introspection for the tests and bench/ScalarRaceProbe: how many Scalars were parked, freed, and are still waiting. */
void fv_scalar_guard_stats(long long *parked_out, long long *freed_out, long long *waiting_out)
{
    pthread_mutex_lock(&lock);
    *parked_out = parked_total;
    *freed_out = freed_total;
    *waiting_out = (long long)count;
    pthread_mutex_unlock(&lock);
}
