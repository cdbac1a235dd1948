/* Keeps a process's large heap blocks mapped after free(), for the next allocation to reuse.
 *
 * Loaded with LD_PRELOAD (bridgetower_jax/host_memory.py builds it and sets the variable). XLA:CPU
 * allocates every step's temporaries with malloc and frees them at the end of the step; glibc serves
 * each block above 32 MB with its own mmap and unmaps it on free, so every step faults in its
 * temporaries afresh (one fault per 4 KiB page, zero-filled by the kernel). Here, blocks of at least
 * BRIDGETOWER_LARGE_BLOCK_MIN_BYTES (default 16 MiB) come from one reserved address range instead,
 * in 2 MiB units, and a freed block stays mapped and goes back to a free list: the next step gets
 * the same pages, already faulted in. Every other request goes to glibc, so threads keep their own
 * arenas for small blocks (glibc's mallopt alone cannot keep large ones: a thread arena maps any
 * block above 64 MB, and one shared arena serialises every thread's malloc); glibc is told to keep
 * what it frees as well (a fixed mmap threshold at the cache's, no trimming).
 *
 * The cost: freed large blocks are not returned to the OS. The range's high-water mark is at most
 * the peak of large blocks live at once, plus fragmentation (free neighbours coalesce; a request
 * takes the best-fitting free extent). When the range is exhausted, requests fall back to glibc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

#define UNIT_SHIFT 21 /* 2 MiB: also the transparent-huge-page size */
#define UNIT ((size_t)1 << UNIT_SHIFT)
#define MAX_FREE_EXTENTS 4096

typedef struct { uint32_t start, units; } extent;  /* in units from the range's base */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *base;                 /* reserved range, PROT_NONE until used */
static size_t span_units;          /* its size */
static size_t top_units;           /* units below this have been made readable and writable */
static uint32_t *live_units;       /* live_units[start] = units of the live block starting there */
static extent free_extents[MAX_FREE_EXTENTS];  /* sorted by start, never adjacent */
static size_t n_free;
static size_t min_bytes = (size_t)16 << 20;
static int state;                  /* 0: not set up, 1: in use, -1: disabled */
static size_t live_total;          /* units in live blocks */
static size_t fallbacks;           /* large requests passed to glibc because the range was full */

static size_t env_size(const char *name, size_t fallback) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0') return fallback;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  return *end == '\0' ? (size_t)v : fallback;
}

static void before_fork(void) { pthread_mutex_lock(&lock); }
static void after_fork(void) { pthread_mutex_unlock(&lock); }

__attribute__((constructor)) static void read_settings(void) {
  min_bytes = env_size("BRIDGETOWER_LARGE_BLOCK_MIN_BYTES", min_bytes);
  if (min_bytes < UNIT) min_bytes = UNIT;  /* smaller blocks would waste most of their unit */
  /* Every large request takes the lock, set up or not: a fork must not copy it held. */
  pthread_atfork(before_fork, after_fork, after_fork);
  /* Below the cache's threshold, glibc keeps what is freed too: without these it maps blocks from
   * 128 KiB up afresh until its adaptive threshold has seen them (PyTorch's 1-16 MB activations and
   * gradients, XLA's per-buffer allocations), and returns freed heap tops to the OS. A fixed
   * threshold may not exceed 32 MiB (glibc refuses it, which leaves the adaptive one). */
  if (min_bytes <= ((size_t)32 << 20)) mallopt(M_MMAP_THRESHOLD, (int)min_bytes);
  mallopt(M_TRIM_THRESHOLD, -1); /* read as the largest size: never trim */
}

/* Called with the lock held. */
static int set_up(void) {
  if (state != 0) return state;
  state = -1;
  size_t span = env_size("BRIDGETOWER_LARGE_BLOCK_SPAN_BYTES", (size_t)1 << 40);  /* address space only */
  span_units = span >> UNIT_SHIFT;
  if (span_units == 0 || span_units > UINT32_MAX) return state;
  /* One extra unit so that the base can be rounded up to a unit boundary. */
  void *r = mmap(NULL, (span_units + 1) << UNIT_SHIFT, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) return state;
  char *aligned_base = (char *)(((uintptr_t)r + UNIT - 1) & ~(uintptr_t)(UNIT - 1));
  void *t = mmap(NULL, span_units * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (t == MAP_FAILED) { munmap(r, (span_units + 1) << UNIT_SHIFT); return state; }
  live_units = t;
  if (env_size("BRIDGETOWER_LARGE_BLOCK_HUGE_PAGES", 0) == 1)
    madvise(aligned_base, span_units << UNIT_SHIFT, MADV_HUGEPAGE);
  /* Published last: free() on other threads tests pointers against it without the lock. */
  __atomic_store_n(&base, aligned_base, __ATOMIC_RELEASE);
  return state = 1;
}

static inline int in_range(const void *p) {
  const char *b = __atomic_load_n(&base, __ATOMIC_ACQUIRE);
  return b != NULL && (const char *)p >= b && (const char *)p < b + (span_units << UNIT_SHIFT);
}

/* Called with the lock held: the start unit of a new block of `units`, or -1. *fresh is 1 when
 * the block's pages have never been written (the kernel zero-fills them on first touch). */
static long take(size_t units, int *fresh) {
  size_t best = n_free;
  for (size_t i = 0; i < n_free; i++)
    if (free_extents[i].units >= units && (best == n_free || free_extents[i].units < free_extents[best].units))
      best = i;
  if (best < n_free) {
    uint32_t start = free_extents[best].start;
    if (free_extents[best].units == units) {
      memmove(&free_extents[best], &free_extents[best + 1], (n_free - best - 1) * sizeof(extent));
      n_free--;
    } else {
      free_extents[best].start += units;
      free_extents[best].units -= units;
    }
    *fresh = 0;
    return start;
  }
  /* Grow at the top; a free extent ending at the top is extended rather than left behind. */
  size_t start = top_units;
  if (n_free > 0 && free_extents[n_free - 1].start + free_extents[n_free - 1].units == top_units)
    start = free_extents[n_free - 1].start;
  if (start + units > span_units) return -1;
  size_t grow = start + units - top_units;
  if (mprotect(base + (top_units << UNIT_SHIFT), grow << UNIT_SHIFT, PROT_READ | PROT_WRITE) != 0) return -1;
  top_units += grow;
  if (start < top_units - grow) n_free--;  /* the extent at the top is now part of the block */
  *fresh = start == top_units - grow;
  return (long)start;
}

/* Called with the lock held: returns the block at `start` to the free list, merged with free
 * neighbours. If the list is full the block stays mapped but unused (it is never lost twice). */
static void give_back(uint32_t start, uint32_t units) {
  size_t i = 0;
  while (i < n_free && free_extents[i].start < start) i++;
  int joins_left = i > 0 && free_extents[i - 1].start + free_extents[i - 1].units == start;
  int joins_right = i < n_free && start + units == free_extents[i].start;
  if (joins_left && joins_right) {
    free_extents[i - 1].units += units + free_extents[i].units;
    memmove(&free_extents[i], &free_extents[i + 1], (n_free - i - 1) * sizeof(extent));
    n_free--;
  } else if (joins_left) {
    free_extents[i - 1].units += units;
  } else if (joins_right) {
    free_extents[i].start = start;
    free_extents[i].units += units;
  } else if (n_free < MAX_FREE_EXTENTS) {
    memmove(&free_extents[i + 1], &free_extents[i], (n_free - i) * sizeof(extent));
    free_extents[i] = (extent){start, units};
    n_free++;
  }
}

/* A block from the range, or NULL (the caller then asks glibc, which also answers impossible sizes). */
static void *large_alloc(size_t size, int zeroed) {
  if (size > ((size_t)UINT32_MAX << UNIT_SHIFT)) return NULL;  /* also keeps the rounding below from wrapping */
  size_t units = (size + UNIT - 1) >> UNIT_SHIFT;
  int fresh = 0;
  pthread_mutex_lock(&lock);
  long start = set_up() == 1 ? take(units, &fresh) : -1;
  if (start >= 0) {
    live_units[start] = (uint32_t)units;
    live_total += units;
  } else if (state == 1) {
    fallbacks++;
  }
  pthread_mutex_unlock(&lock);
  if (start < 0) return NULL;
  char *p = base + ((size_t)start << UNIT_SHIFT);
  if (zeroed && !fresh) memset(p, 0, size);
  return p;
}

static size_t large_size(const void *p) {
  return (size_t)live_units[((const char *)p - base) >> UNIT_SHIFT] << UNIT_SHIFT;
}

static void large_free(void *p) {
  uint32_t start = (uint32_t)(((char *)p - base) >> UNIT_SHIFT);
  pthread_mutex_lock(&lock);
  uint32_t units = live_units[start];
  live_units[start] = 0;
  live_total -= units;
  if (units != 0) give_back(start, units);
  pthread_mutex_unlock(&lock);
}

void *malloc(size_t size) {
  if (size >= min_bytes) {
    void *p = large_alloc(size, 0);
    if (p != NULL) return p;
  }
  return __libc_malloc(size);
}

void free(void *ptr) {
  if (in_range(ptr)) large_free(ptr);
  else __libc_free(ptr);
}

void *calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) { errno = ENOMEM; return NULL; }
  if (total >= min_bytes) {
    void *p = large_alloc(total, 1);
    if (p != NULL) return p;
  }
  return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size) {
  if (ptr == NULL) return malloc(size);
  if (!in_range(ptr)) return __libc_realloc(ptr, size);
  size_t have = large_size(ptr);
  if (size <= have && size >= min_bytes) return ptr;
  void *q = malloc(size);
  if (q == NULL) return NULL;
  memcpy(q, ptr, size < have ? size : have);
  large_free(ptr);
  return q;
}

static void *aligned(size_t alignment, size_t size) {
  if (size >= min_bytes && alignment <= UNIT) {
    void *p = large_alloc(size, 0);
    if (p != NULL) return p;
  }
  return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void *p = aligned(alignment, size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

void *aligned_alloc(size_t alignment, size_t size) { return aligned(alignment, size); }

void *memalign(size_t alignment, size_t size) { return aligned(alignment, size); }

size_t malloc_usable_size(void *ptr) {
  if (in_range(ptr)) return large_size(ptr);
  /* glibc exports no __libc_ name for this one. */
  static size_t (*next)(void *);
  size_t (*fn)(void *) = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
  if (fn == NULL) {
    fn = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    __atomic_store_n(&next, fn, __ATOMIC_RELEASE);
  }
  return ptr == NULL || fn == NULL ? 0 : fn(ptr);
}

/* For tests and benchmarks: bytes of the range in use (mapped) and in live blocks, the free-list
 * length, and the large requests that went to glibc because the range was full. */
void bridgetower_large_block_stats(size_t out[4]) {
  pthread_mutex_lock(&lock);
  out[0] = top_units << UNIT_SHIFT;
  out[1] = live_total << UNIT_SHIFT;
  out[2] = n_free;
  out[3] = fallbacks;
  pthread_mutex_unlock(&lock);
}
