/*
 * Compiled kernels of robust (internal, optional: robust._native falls back to numpy).
 *
 * 1. Column order statistics by a comparator network, vectorised across columns.
 *
 * rank_columns(X, rows, a, c, pairs, ranks, out, sum_wires, sums[, scratch])
 *
 * For each column j in [a, a + c) of the C-contiguous float32 or float64 matrix X (2-D),
 * the values X[rows[0], j], ..., X[rows[n-1], j] (int64 rows) are put through the
 * comparator network `pairs` (int32, shape (m, 2): pair (i, k) with i < k gives wire i the
 * minimum, wire k the maximum). Then, for each q, the value on wire ranks[q] (int64) is
 * written to out[q, j - a] (out: 2-D, the dtype of X, at least (len(ranks), c)), and if
 * sum_wires (int64) is not empty, the float64 sum of the values on those wires (added in
 * the order given) is written to sums[j - a] (float64). When `pairs` is a sorting network
 * (or one pruned to the requested wires), wire r carries the r-th smallest value of the
 * column. Returns True if every value read was finite (the results
 * are meaningless otherwise).
 *
 * The network runs on blocks of W adjacent columns at once: a comparator is one vector
 * min and one vector max per block, with no branches, so its cost does not depend on the
 * data. Columns are first copied from X into a tile laid out block by block (each block is
 * n rows of W contiguous values, small enough for L1), then every block is sorted, then
 * the requested ranks are copied out.
 *
 * Values must be finite for the ranks to mean anything (NaN compares false); the return
 * value says whether they were, so callers may skip a separate finiteness pass.
 * Every buffer's format, layout and size, and every index, is checked before any work
 * (see "Buffer checks" below); the GIL is released while the network runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FORTIS_X86 1
#endif

#define VECS 4            /* vectors of 32 bytes per row of a block */
#define TILE_BYTES 2048   /* per row of a tile: 512 float32 or 256 float64 columns */

typedef float vf32 __attribute__((vector_size(32)));
typedef int32_t vi32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));
typedef int64_t vi64 __attribute__((vector_size(32)));

/* Comparator outputs: lo = x < y ? x : y and hi = x < y ? y : x, so that (lo, hi) is always
 * a permutation of (x, y) (even for +0/-0). Portable form with masks; on x86-64 with AVX2
 * the same through vminps/vmaxps (max with swapped operands gives x < y ? y : x). */
#define MASK_LO(VT, VI, x, y) ((VT)(((VI)((x) < (y)) & (VI)(x)) | (~(VI)((x) < (y)) & (VI)(y))))
#define MASK_HI(VT, VI, x, y) ((VT)(((VI)((x) < (y)) & (VI)(y)) | (~(VI)((x) < (y)) & (VI)(x))))
#define AVX_LO_PS(VT, VI, x, y) ((VT)_mm256_min_ps((__m256)(x), (__m256)(y)))
#define AVX_HI_PS(VT, VI, x, y) ((VT)_mm256_max_ps((__m256)(y), (__m256)(x)))
#define AVX_LO_PD(VT, VI, x, y) ((VT)_mm256_min_pd((__m256d)(x), (__m256d)(y)))
#define AVX_HI_PD(VT, VI, x, y) ((VT)_mm256_max_pd((__m256d)(y), (__m256d)(x)))

/* acc (float64 vectors) += the VECS vectors at src, lane by lane */
typedef float vf32x4 __attribute__((vector_size(16)));
static inline void
add_f32(vf64 *acc, const vf32 *src)
{
    for (int v = 0; v < VECS; v++) {
        vf32x4 lo, hi;
        memcpy(&lo, &src[v], 16);
        memcpy(&hi, (const char *)&src[v] + 16, 16);
        acc[2 * v] += __builtin_convertvector(lo, vf64);
        acc[2 * v + 1] += __builtin_convertvector(hi, vf64);
    }
}
static inline void
add_f64(vf64 *acc, const vf64 *src)
{
    for (int v = 0; v < VECS; v++) acc[v] += src[v];
}

#define DEFINE_RANK(NAME, T, VT, VI, ATTR, LO, HI, ADD)                                     \
    ATTR static int NAME(const void *Xv, int64_t ld, const int64_t *rows, int64_t n,        \
                         int64_t a, int64_t c, const int32_t *pairs, int64_t np,            \
                         const int64_t *ranks, int64_t nr, void *outv, int64_t out_ld,      \
                         const int64_t *sw, int64_t ns, double *sums, void *tilev)          \
    {                                                                                       \
        const T *X = (const T *)Xv;                                                         \
        T *out = (T *)outv;                                                                 \
        VT *tile = (VT *)tilev;                                                             \
        const int64_t lanes = (int64_t)(sizeof(VT) / sizeof(T));                            \
        const int64_t W = VECS * lanes;                                                     \
        const int64_t TW = TILE_BYTES / (int64_t)sizeof(T);                                 \
        VT zero_if_finite[VECS];                                                            \
        for (int v = 0; v < VECS; v++) zero_if_finite[v] = (VT){0};                         \
        for (int64_t t0 = 0; t0 < c; t0 += TW) {                                            \
            const int64_t tw = c - t0 < TW ? c - t0 : TW;                                   \
            const int64_t nb = (tw + W - 1) / W;                                            \
            for (int64_t r = 0; r < n; r++) {                                               \
                const T *src = X + rows[r] * ld + a + t0;                                   \
                for (int64_t b = 0; b < nb; b++) {                                          \
                    T *dst = (T *)(tile + (b * n + r) * VECS);                              \
                    const int64_t w = tw - b * W < W ? tw - b * W : W;                      \
                    if (w == W) /* constant size: inlined as vector moves */                \
                        memcpy(dst, src + b * W, VECS * 32);                                \
                    else {                                                                  \
                        memcpy(dst, src + b * W, (size_t)w * sizeof(T));                    \
                        for (int64_t k = w; k < W; k++) dst[k] = 0;                         \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            if (t0 + TW < c) { /* fetch the next tile while the network runs on this one */ \
                const int64_t nw = c - t0 - TW < TW ? c - t0 - TW : TW;                      \
                for (int64_t r = 0; r < n; r++) {                                           \
                    const char *nx = (const char *)(X + rows[r] * ld + a + t0 + TW);        \
                    for (int64_t o = 0; o < nw * (int64_t)sizeof(T); o += 64)               \
                        __builtin_prefetch(nx + o, 0, 2);                                   \
                }                                                                           \
            }                                                                               \
            for (int64_t i = 0; i < nb * n; i++) /* x*0 is NaN iff x is inf/NaN */          \
                for (int v = 0; v < VECS; v++) zero_if_finite[v] += tile[i * VECS + v] * 0;  \
            for (int64_t b = 0; b < nb; b++) {                                              \
                VT *blk = tile + b * n * VECS;                                              \
                for (int64_t q = 0; q < np; q++) {                                          \
                    VT *p = blk + (int64_t)pairs[2 * q] * VECS;                             \
                    VT *s = blk + (int64_t)pairs[2 * q + 1] * VECS;                         \
                    for (int v = 0; v < VECS; v++) {                                        \
                        VT x = p[v], y = s[v];                                              \
                        p[v] = LO(VT, VI, x, y);                                            \
                        s[v] = HI(VT, VI, x, y);                                            \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            for (int64_t q = 0; q < nr; q++) {                                              \
                T *dst = out + q * out_ld + t0;                                             \
                for (int64_t b = 0; b < nb; b++) {                                          \
                    const int64_t w = tw - b * W < W ? tw - b * W : W;                      \
                    if (w == W)                                                             \
                        memcpy(dst + b * W, tile + (b * n + ranks[q]) * VECS, VECS * 32);   \
                    else                                                                    \
                        memcpy(dst + b * W, tile + (b * n + ranks[q]) * VECS,               \
                               (size_t)w * sizeof(T));                                      \
                }                                                                           \
            }                                                                               \
            for (int64_t b = 0; ns > 0 && b < nb; b++) {                                    \
                vf64 acc[VECS * 32 / sizeof(T) / 4];                                        \
                for (size_t k = 0; k < sizeof(acc) / sizeof(acc[0]); k++) acc[k] = (vf64){0}; \
                for (int64_t q = 0; q < ns; q++)                                            \
                    ADD(acc, tile + (b * n + sw[q]) * VECS);                                \
                const int64_t w = tw - b * W < W ? tw - b * W : W;                          \
                if (w == W)                                                                 \
                    memcpy(sums + t0 + b * W, acc, sizeof(acc));                            \
                else                                                                        \
                    memcpy(sums + t0 + b * W, acc, (size_t)w * sizeof(double));             \
            }                                                                               \
        }                                                                                   \
        for (int v = 0; v < VECS; v++)                                                      \
            for (int64_t k = 0; k < lanes; k++)                                             \
                if (zero_if_finite[v][k] != 0) return 0; /* NaN != 0 */                     \
        return 1;                                                                           \
    }

DEFINE_RANK(rank_f32_generic, float, vf32, vi32, , MASK_LO, MASK_HI, add_f32)
DEFINE_RANK(rank_f64_generic, double, vf64, vi64, , MASK_LO, MASK_HI, add_f64)
#ifdef FORTIS_X86
#define AVX2_ATTR __attribute__((target("avx2")))
DEFINE_RANK(rank_f32_avx2, float, vf32, vi32, AVX2_ATTR, AVX_LO_PS, AVX_HI_PS, add_f32)
DEFINE_RANK(rank_f64_avx2, double, vf64, vi64, AVX2_ATTR, AVX_LO_PD, AVX_HI_PD, add_f64)
#endif

static int
have_avx2(void)
{
#ifdef FORTIS_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return cached;
#else
    return 0;
#endif
}

/*
 * 2. Squared distances of rows to a point, accumulated in float64.
 *
 * sq_dists(X, rows, a, c, z, out): out[r] = sum over j in [a, a + c) of
 * (X[rows[r], j] - z[j - a])^2 for the float32 or float64 matrix X, with the difference and
 * the sum in float64 (z is a float64 vector of c values, or empty for the origin; out a
 * float64 vector of at least len(rows) values). One streaming pass over each row.
 */
#define DEFINE_SQDIST(NAME, T, ATTR)                                                        \
    ATTR static void NAME(const void *Xv, int64_t ld, const int64_t *rows, int64_t n,       \
                          int64_t a, int64_t c, const double *z, double *out)               \
    {                                                                                       \
        const T *X = (const T *)Xv;                                                         \
        for (int64_t r = 0; r < n; r++) {                                                   \
            const T *x = X + rows[r] * ld + a;                                              \
            double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                       \
            int64_t j = 0;                                                                  \
            if (z) {                                                                        \
                for (; j + 8 <= c; j += 8)                                                  \
                    for (int k = 0; k < 8; k++) {                                           \
                        double d = (double)x[j + k] - z[j + k];                             \
                        acc[k] += d * d;                                                    \
                    }                                                                       \
                for (; j < c; j++) {                                                        \
                    double d = (double)x[j] - z[j];                                         \
                    acc[j & 7] += d * d;                                                    \
                }                                                                           \
            } else {                                                                        \
                for (; j + 8 <= c; j += 8)                                                  \
                    for (int k = 0; k < 8; k++) {                                           \
                        double d = (double)x[j + k];                                        \
                        acc[k] += d * d;                                                    \
                    }                                                                       \
                for (; j < c; j++) {                                                        \
                    double d = (double)x[j];                                                \
                    acc[j & 7] += d * d;                                                    \
                }                                                                           \
            }                                                                               \
            out[r] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) +                              \
                     ((acc[2] + acc[6]) + (acc[3] + acc[7]));                               \
        }                                                                                   \
    }

DEFINE_SQDIST(sqdist_f32_generic, float, )
DEFINE_SQDIST(sqdist_f64_generic, double, )
#ifdef FORTIS_X86
DEFINE_SQDIST(sqdist_f32_avx2, float, AVX2_ATTR)
DEFINE_SQDIST(sqdist_f64_avx2, double, AVX2_ATTR)
#endif

/*
 * 3. Centred float32 copy of a column chunk (for the float32-product Gram).
 *
 * center_rows(X, rows, a, c, z, out): out[r, j] = float(X[rows[r], a + j] - m[j]) for the
 * float32 matrix X and a float32 out of at least (len(rows), c), where m is z (float64, c
 * values) or, if z is empty, the column mean over the rows (computed in float64). Columns are
 * processed in tiles small enough for the rows of a tile to stay in cache, so X is read
 * from memory once.
 */
#define CENTER_TILE 1024
#define DEFINE_CENTER(NAME, ATTR)                                                           \
    ATTR static void NAME(const float *X, int64_t ld, const int64_t *rows, int64_t n,       \
                          int64_t a, int64_t c, const double *z, float *out, int64_t out_ld) \
    {                                                                                       \
        double m[CENTER_TILE];                                                              \
        for (int64_t t0 = 0; t0 < c; t0 += CENTER_TILE) {                                   \
            const int64_t tw = c - t0 < CENTER_TILE ? c - t0 : CENTER_TILE;                 \
            if (z) {                                                                        \
                for (int64_t j = 0; j < tw; j++) m[j] = z[t0 + j];                          \
            } else {                                                                        \
                for (int64_t j = 0; j < tw; j++) m[j] = 0.0;                                \
                for (int64_t r = 0; r < n; r++) {                                           \
                    const float *x = X + rows[r] * ld + a + t0;                             \
                    for (int64_t j = 0; j < tw; j++) m[j] += (double)x[j];                  \
                }                                                                           \
                const double inv = 1.0 / (double)n;                                         \
                for (int64_t j = 0; j < tw; j++) m[j] *= inv;                               \
            }                                                                               \
            for (int64_t r = 0; r < n; r++) {                                               \
                const float *x = X + rows[r] * ld + a + t0;                                 \
                float *o = out + r * out_ld + t0;                                           \
                for (int64_t j = 0; j < tw; j++) o[j] = (float)((double)x[j] - m[j]);       \
            }                                                                               \
        }                                                                                   \
    }

DEFINE_CENTER(center_generic, )
#ifdef FORTIS_X86
DEFINE_CENTER(center_avx2, AVX2_ATTR)
#endif

/* The kernel for the element size and the CPU: one function pointer type per family. */
typedef int (*RankKernel)(const void *, int64_t, const int64_t *, int64_t, int64_t, int64_t,
                          const int32_t *, int64_t, const int64_t *, int64_t, void *, int64_t,
                          const int64_t *, int64_t, double *, void *);
typedef void (*SqDistKernel)(const void *, int64_t, const int64_t *, int64_t, int64_t, int64_t,
                             const double *, double *);
typedef void (*CenterKernel)(const float *, int64_t, const int64_t *, int64_t, int64_t, int64_t,
                             const double *, float *, int64_t);

#ifndef FORTIS_X86 /* no AVX2 variants: the generic kernels fill both rows of the tables */
#define rank_f32_avx2 rank_f32_generic
#define rank_f64_avx2 rank_f64_generic
#define sqdist_f32_avx2 sqdist_f32_generic
#define sqdist_f64_avx2 sqdist_f64_generic
#define center_avx2 center_generic
#endif

/* [AVX2 available][float64] */
static const RankKernel RANK_KERNELS[2][2] = {{rank_f32_generic, rank_f64_generic},
                                              {rank_f32_avx2, rank_f64_avx2}};
static const SqDistKernel SQDIST_KERNELS[2][2] = {{sqdist_f32_generic, sqdist_f64_generic},
                                                  {sqdist_f32_avx2, sqdist_f64_avx2}};
static const CenterKernel CENTER_KERNELS[2] = {center_generic, center_avx2};

static size_t
scratch_bytes(int64_t n)
{
    return (size_t)n * (TILE_BYTES + VECS * 32);
}

static PyObject *
rank_scratch_bytes(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "rank_scratch_bytes: n must be >= 1");
        return NULL;
    }
    return PyLong_FromSize_t(scratch_bytes(n) + 32);
}

/*
 * Buffer checks. Every array argument is acquired through the buffer protocol with its
 * format, and checked against what the kernel reads or writes: element kind and size,
 * number of dimensions, C-contiguity and (for outputs) writability. Nothing about a
 * buffer is taken from the other arguments: the row length of X and of the outputs comes
 * from their shapes. A wrong format, a layout that is not C-contiguous or a read-only
 * output raises TypeError; a wrong number of dimensions or a size that does not fit the
 * call raises ValueError; an index value out of range raises IndexError. All of it is
 * checked before any work.
 */
enum { ANY_FLOAT = 0 }; /* itemsize wildcard: float32 or float64 */

typedef struct {
    char kind;          /* 'f' floating point, 'i' signed integer, 0: any (raw bytes) */
    Py_ssize_t itemsize; /* bytes per element; ANY_FLOAT: 4 or 8 */
    int ndim;           /* 0: any */
    int writable;
    const char *label;  /* e.g. "int64", for messages */
} Spec;

static const Spec X_SPEC = {'f', ANY_FLOAT, 2, 0, "float32 or float64"};
static const Spec X32_SPEC = {'f', 4, 2, 0, "float32"};
static const Spec ROWS_SPEC = {'i', 8, 1, 0, "int64"};
static const Spec INDEX_SPEC = {'i', 8, 1, 0, "int64"};
static const Spec PAIRS_SPEC = {'i', 4, 2, 0, "int32"};
static const Spec Z_SPEC = {'f', 8, 1, 0, "float64"};
static const Spec F64_OUT_SPEC = {'f', 8, 1, 1, "float64"};
static const Spec SCRATCH_SPEC = {0, 1, 0, 1, "byte"};

/* The buffers one call acquires, released together whatever the exit path. */
typedef struct {
    const char *fn; /* the Python-level function, for error messages */
    Py_buffer views[10];
    int count;
} Buffers;

/* 'f', 'i' or 'u' for a native single-element struct format ("f", "<d", "=q" ...), else 0 */
static char
format_kind(const char *format)
{
    if (format == NULL) return 'u'; /* plain bytes */
    const char *f = format;
    if (*f == '@' || *f == '=') f++;
#if PY_LITTLE_ENDIAN
    else if (*f == '<') f++;
#else
    else if (*f == '>' || *f == '!') f++;
#endif
    if (f[0] == '\0' || f[1] != '\0') return 0;
    if (strchr("efd", f[0])) return 'f';
    if (strchr("bhilqn", f[0])) return 'i';
    if (strchr("BHILQN", f[0])) return 'u';
    return 0;
}

static Py_buffer *
acquire(Buffers *b, PyObject *obj, const char *name, const Spec *spec)
{
    Py_buffer *view = &b->views[b->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (spec->writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a C-contiguous%s %s array", b->fn, name,
                     spec->writable ? " writable" : "", spec->label);
        return NULL;
    }
    b->count++;
    if (spec->kind) {
        const int size_ok = spec->itemsize == ANY_FLOAT
                                ? (view->itemsize == 4 || view->itemsize == 8)
                                : view->itemsize == spec->itemsize;
        if (format_kind(view->format) != spec->kind || !size_ok) {
            PyErr_Format(PyExc_TypeError,
                         "%s: %s must be a %s array, got format '%s' with itemsize %zd", b->fn,
                         name, spec->label, view->format ? view->format : "B", view->itemsize);
            return NULL;
        }
    }
    if (spec->ndim && view->ndim != spec->ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be %d-D, got %d-D", b->fn, name, spec->ndim,
                     view->ndim);
        return NULL;
    }
    return view;
}

static void
release_all(Buffers *b)
{
    while (b->count > 0) PyBuffer_Release(&b->views[--b->count]);
}

static Py_ssize_t
length(const Py_buffer *v)
{
    return v->ndim == 0 ? 1 : v->shape[0];
}

/* Every index of v lies in [0, n). */
static int
check_indices(const char *fn, const char *what, const Py_buffer *v, int64_t n)
{
    const int64_t *idx = (const int64_t *)v->buf;
    for (Py_ssize_t q = 0; q < length(v); q++) {
        if (idx[q] < 0 || idx[q] >= n) {
            PyErr_Format(PyExc_IndexError, "%s: %s out of range", fn, what);
            return -1;
        }
    }
    return 0;
}

/* X (2-D, rows of ld = shape[1] values) and the row indices `rows` into it; columns
 * [a, a + c) of those rows must exist. */
typedef struct {
    Py_buffer *x, *rows;
    int64_t n, ld;
} Block;

static int
acquire_block(Buffers *b, PyObject *ox, const Spec *xspec, PyObject *orows, Py_ssize_t a,
              Py_ssize_t c, Block *blk)
{
    if (!(blk->x = acquire(b, ox, "X", xspec)) || !(blk->rows = acquire(b, orows, "rows", &ROWS_SPEC)))
        return -1;
    blk->n = length(blk->rows);
    blk->ld = blk->x->shape[1];
    if (blk->n < 1 || a < 0 || c < 1 || a + c > blk->ld) {
        PyErr_Format(PyExc_ValueError,
                     "%s: columns [%zd, %zd) of %zd rows do not fit X of shape (%zd, %zd)", b->fn,
                     a, a + c, (Py_ssize_t)blk->n, blk->x->shape[0], blk->x->shape[1]);
        return -1;
    }
    return check_indices(b->fn, "row index", blk->rows, blk->x->shape[0]);
}

/* an output of at least `need_rows` rows of at least `c` values (2-D, `spec` format) */
static Py_buffer *
acquire_out(Buffers *b, PyObject *obj, const char *name, const Spec *spec, Py_ssize_t need_rows,
            Py_ssize_t c)
{
    Py_buffer *v = acquire(b, obj, name, spec);
    if (v != NULL && (v->shape[0] < need_rows || v->shape[1] < c)) {
        PyErr_Format(PyExc_ValueError, "%s: %s is too small: needs (%zd, %zd), got (%zd, %zd)",
                     b->fn, name, need_rows, c, v->shape[0], v->shape[1]);
        return NULL;
    }
    return v;
}

/* z is empty (the origin, or the column mean) or holds at least c float64 values. */
static int
check_center(const char *fn, const Py_buffer *z, Py_ssize_t c)
{
    if (length(z) != 0 && length(z) < c) {
        PyErr_Format(PyExc_ValueError, "%s: z is too short: %zd values for %zd columns", fn,
                     length(z), c);
        return -1;
    }
    return 0;
}

static PyObject *
rank_columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *orows, *opairs, *oranks, *oout, *osw, *osums, *oscratch = NULL;
    Py_ssize_t a, c;
    if (!PyArg_ParseTuple(args, "OOnnOOOOO|O:rank_columns", &ox, &orows, &a, &c, &opairs, &oranks,
                          &oout, &osw, &osums, &oscratch))
        return NULL;
    Buffers b = {.fn = "rank_columns", .count = 0};
    PyObject *result = NULL;
    void *tile = NULL, *owned = NULL;
    Block blk;
    Py_buffer *bpairs, *branks, *bout, *bsw, *bsums, *bscratch;
    if (acquire_block(&b, ox, &X_SPEC, orows, a, c, &blk) < 0) goto done;
    const Spec out_spec = {'f', blk.x->itemsize, 2, 1, blk.x->itemsize == 4 ? "float32" : "float64"};
    if (!(bpairs = acquire(&b, opairs, "pairs", &PAIRS_SPEC)) ||
        !(branks = acquire(&b, oranks, "ranks", &INDEX_SPEC)) ||
        !(bsw = acquire(&b, osw, "sum_wires", &INDEX_SPEC)) ||
        !(bsums = acquire(&b, osums, "sums", &F64_OUT_SPEC)) ||
        !(bout = acquire_out(&b, oout, "out (the dtype of X)", &out_spec, length(branks), c)))
        goto done;
    const int64_t n = blk.n, np = bpairs->shape[0], nr = length(branks), ns = length(bsw);
    if (bpairs->shape[1] != 2) {
        PyErr_Format(PyExc_ValueError, "rank_columns: pairs must have shape (m, 2), got (%zd, %zd)",
                     bpairs->shape[0], bpairs->shape[1]);
        goto done;
    }
    const int32_t *pairs = (const int32_t *)bpairs->buf;
    for (int64_t q = 0; q < 2 * np; q++) {
        if (pairs[q] < 0 || pairs[q] >= n) {
            PyErr_SetString(PyExc_IndexError, "rank_columns: network wire out of range");
            goto done;
        }
    }
    if (check_indices(b.fn, "rank", branks, n) < 0) goto done;
    if (check_indices(b.fn, "summed wire", bsw, n) < 0) goto done;
    if (ns > 0 && length(bsums) < c) {
        PyErr_Format(PyExc_ValueError, "rank_columns: sums is too small: %zd values for %zd columns",
                     length(bsums), c);
        goto done;
    }
    const size_t tile_bytes = scratch_bytes(n);
    if (oscratch != NULL && oscratch != Py_None) {
        /* a caller-owned buffer reused across calls: no allocation (and no fresh pages for
         * the OS to zero) per call */
        if (!(bscratch = acquire(&b, oscratch, "scratch", &SCRATCH_SPEC))) goto done;
        if ((size_t)bscratch->len < tile_bytes + 32) {
            PyErr_SetString(PyExc_ValueError, "rank_columns: scratch is too small");
            goto done;
        }
        tile = (void *)(((uintptr_t)bscratch->buf + 31) & ~(uintptr_t)31);
    } else {
        owned = aligned_alloc(32, (tile_bytes + 31) / 32 * 32);
        if (owned == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        tile = owned;
    }
    const RankKernel kernel = RANK_KERNELS[have_avx2()][blk.x->itemsize == 8];
    const int64_t *rows = (const int64_t *)blk.rows->buf, *ranks = (const int64_t *)branks->buf;
    const int64_t *sw = (const int64_t *)bsw->buf, ld = blk.ld, out_ld = bout->shape[1];
    int finite;
    Py_BEGIN_ALLOW_THREADS
    finite = kernel(blk.x->buf, ld, rows, n, a, c, pairs, np, ranks, nr, bout->buf, out_ld, sw, ns,
                    (double *)bsums->buf, tile);
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(finite);
done:
    free(owned);
    release_all(&b);
    return result;
}

static PyObject *
sq_dists(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *orows, *oz, *oout;
    Py_ssize_t a, c;
    if (!PyArg_ParseTuple(args, "OOnnOO:sq_dists", &ox, &orows, &a, &c, &oz, &oout)) return NULL;
    Buffers b = {.fn = "sq_dists", .count = 0};
    PyObject *result = NULL;
    Block blk;
    Py_buffer *bz, *bout;
    if (acquire_block(&b, ox, &X_SPEC, orows, a, c, &blk) < 0 ||
        !(bz = acquire(&b, oz, "z", &Z_SPEC)) || !(bout = acquire(&b, oout, "out", &F64_OUT_SPEC)))
        goto done;
    if (check_center(b.fn, bz, c) < 0) goto done;
    if (length(bout) < blk.n) {
        PyErr_Format(PyExc_ValueError, "sq_dists: out is too small: %zd values for %zd rows",
                     length(bout), (Py_ssize_t)blk.n);
        goto done;
    }
    const SqDistKernel kernel = SQDIST_KERNELS[have_avx2()][blk.x->itemsize == 8];
    const double *z = length(bz) ? (const double *)bz->buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    kernel(blk.x->buf, blk.ld, (const int64_t *)blk.rows->buf, blk.n, a, c, z, (double *)bout->buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_all(&b);
    return result;
}

static PyObject *
center_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *orows, *oz, *oout;
    Py_ssize_t a, c;
    if (!PyArg_ParseTuple(args, "OOnnOO:center_rows", &ox, &orows, &a, &c, &oz, &oout))
        return NULL;
    Buffers b = {.fn = "center_rows", .count = 0};
    PyObject *result = NULL;
    Block blk;
    Py_buffer *bz, *bout;
    const Spec out_spec = {'f', 4, 2, 1, "float32"};
    if (acquire_block(&b, ox, &X32_SPEC, orows, a, c, &blk) < 0 ||
        !(bz = acquire(&b, oz, "z", &Z_SPEC)) ||
        !(bout = acquire_out(&b, oout, "out", &out_spec, blk.n, c)))
        goto done;
    if (check_center(b.fn, bz, c) < 0) goto done;
    const CenterKernel kernel = CENTER_KERNELS[have_avx2()];
    const double *z = length(bz) ? (const double *)bz->buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    kernel((const float *)blk.x->buf, blk.ld, (const int64_t *)blk.rows->buf, blk.n, a, c, z,
           (float *)bout->buf, bout->shape[1]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release_all(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"rank_columns", rank_columns, METH_VARARGS,
     "rank_columns(X, rows, a, c, pairs, ranks, out, sum_wires, sums[, scratch]): see the C "
     "source; called only through robust._ranking."},
    {"rank_scratch_bytes", rank_scratch_bytes, METH_O,
     "rank_scratch_bytes(n): bytes of the optional scratch buffer of rank_columns for n rows."},
    {"center_rows", center_rows, METH_VARARGS,
     "center_rows(X, rows, a, c, z, out): see the C source; float32 X only."},
    {"sq_dists", sq_dists, METH_VARARGS,
     "sq_dists(X, rows, a, c, z, out): see the C source; called only through robust._rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled kernels of robust (internal; see robust._native).", -1, methods,
    NULL, NULL, NULL, NULL,
};

/* setup.py compiles in the SHA-256 of this file; robust._native compares it with the
 * shipped source and refuses a stale build. */
#ifndef FORTIS_KERNEL_SOURCE_SHA256
#define FORTIS_KERNEL_SOURCE_SHA256 ""
#endif

PyMODINIT_FUNC
PyInit__kernels(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCE_SHA256", FORTIS_KERNEL_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
