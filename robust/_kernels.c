/*
 * Compiled kernels of robust (internal, optional: robust._native falls back to numpy).
 *
 * 1. Column order statistics by a comparator network, vectorised across columns.
 *
 * rank_columns(X, itemsize, ld, rows, a, c, pairs, ranks, out, out_ld, sum_wires, sums[,
 *              scratch])
 *
 * For each column j in [a, a + c) of the row-major matrix X (row stride ld elements),
 * the values X[rows[0], j], ..., X[rows[n-1], j] are put through the comparator network
 * `pairs` (int32 pairs (i, k) with i < k: wire i receives the minimum, wire k the
 * maximum). Then, for each q, the value on wire ranks[q] is written to
 * out[q * out_ld + (j - a)], and if sum_wires is not empty, the float64 sum of the values
 * on those wires (added in the order given) is written to sums[j - a]. When `pairs` is a
 * sorting network (or one pruned to the requested wires), wire r carries the r-th
 * smallest value of the column. Returns True if every value read was finite (the results
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
 * Every index and length is checked against the buffers before any work; the GIL is
 * released while the network runs.
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
    ATTR static int NAME(const T *X, int64_t ld, const int64_t *rows, int64_t n,  \
                                   int64_t a, int64_t c, const int32_t *pairs, int64_t np,  \
                                   const int64_t *ranks, int64_t nr, T *out, int64_t out_ld, \
                                   const int64_t *sw, int64_t ns, double *sums, VT *tile)   \
    {                                                                                       \
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
 * sq_dists(X, itemsize, ld, rows, a, c, z, out): out[r] = sum over j in [a, a + c) of
 * (X[rows[r], j] - z[j - a])^2, with the difference and the sum in float64 (z is a float64
 * buffer of c values, or empty for the origin). One streaming pass over each row.
 */
#define DEFINE_SQDIST(NAME, T, ATTR)                                                        \
    ATTR static void NAME(const T *X, int64_t ld, const int64_t *rows, int64_t n,           \
                          int64_t a, int64_t c, const double *z, double *out)               \
    {                                                                                       \
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
 * center_rows(X, ld, rows, a, c, z, out, out_ld): out[r * out_ld + j] =
 * float(X[rows[r], a + j] - m[j]) for the float32 matrix X, where m is z (float64, c values)
 * or, if z is empty, the column mean over the rows (computed in float64). Columns are
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

/* The buffers one call acquires, released together whatever the exit path. */
typedef struct {
    const char *fn; /* the Python-level function, for error messages */
    Py_buffer views[8];
    int count;
} Buffers;

static Py_buffer *
acquire(Buffers *b, PyObject *obj, int writable, const char *name)
{
    Py_buffer *view = &b->views[b->count];
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a C-contiguous%s buffer", b->fn, name,
                     writable ? " writable" : "");
        return NULL;
    }
    b->count++;
    return view;
}

static void
release_all(Buffers *b)
{
    while (b->count > 0) PyBuffer_Release(&b->views[--b->count]);
}

/* Columns [a, a + c) of the rows `rows` of X (row stride ld, nx elements in all) exist. */
static int
check_block(const char *fn, int64_t nx, const int64_t *rows, int64_t n, Py_ssize_t ld,
            Py_ssize_t a, Py_ssize_t c)
{
    if (n < 1 || ld < 1 || a < 0 || c < 1 || a + c > ld) {
        PyErr_Format(PyExc_ValueError, "%s: bad shape arguments", fn);
        return -1;
    }
    for (int64_t r = 0; r < n; r++) {
        if (rows[r] < 0 || (rows[r] + 1) * ld > nx) {
            PyErr_Format(PyExc_IndexError, "%s: row index out of range", fn);
            return -1;
        }
    }
    return 0;
}

/* Every index of v lies in [0, n). */
static int
check_indices(const char *fn, const char *what, const int64_t *v, int64_t count, int64_t n)
{
    for (int64_t q = 0; q < count; q++) {
        if (v[q] < 0 || v[q] >= n) {
            PyErr_Format(PyExc_IndexError, "%s: %s out of range", fn, what);
            return -1;
        }
    }
    return 0;
}

/* z is empty (the origin, or the column mean) or holds at least c float64 values. */
static int
check_center(const char *fn, const Py_buffer *z, Py_ssize_t c)
{
    if (z->len != 0 && z->len < c * (Py_ssize_t)sizeof(double)) {
        PyErr_Format(PyExc_IndexError, "%s: z is too short", fn);
        return -1;
    }
    return 0;
}

static PyObject *
rank_columns(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *orows, *opairs, *oranks, *oout, *osw, *osums, *oscratch = NULL;
    Py_ssize_t itemsize, ld, a, c, out_ld;
    if (!PyArg_ParseTuple(args, "OnnOnnOOOnOO|O", &ox, &itemsize, &ld, &orows, &a, &c, &opairs,
                          &oranks, &oout, &out_ld, &osw, &osums, &oscratch))
        return NULL;
    if (itemsize != 4 && itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "rank_columns: itemsize must be 4 or 8");
        return NULL;
    }
    Buffers b = {.fn = "rank_columns", .count = 0};
    PyObject *result = NULL;
    void *tile = NULL, *owned = NULL;
    Py_buffer *bx, *brows, *bpairs, *branks, *bout, *bsw, *bsums, *bscratch;
    if (!(bx = acquire(&b, ox, 0, "X")) || !(brows = acquire(&b, orows, 0, "rows")) ||
        !(bpairs = acquire(&b, opairs, 0, "pairs")) || !(branks = acquire(&b, oranks, 0, "ranks")) ||
        !(bout = acquire(&b, oout, 1, "out")) || !(bsw = acquire(&b, osw, 0, "sum_wires")) ||
        !(bsums = acquire(&b, osums, 1, "sums")))
        goto done;

    const int64_t n = (int64_t)(brows->len / 8);
    const int64_t np = (int64_t)(bpairs->len / 8);
    const int64_t nr = (int64_t)(branks->len / 8);
    const int64_t ns = (int64_t)(bsw->len / 8);
    const int64_t *rows = (const int64_t *)brows->buf;
    const int32_t *pairs = (const int32_t *)bpairs->buf;
    const int64_t *ranks = (const int64_t *)branks->buf;
    const int64_t *sw = (const int64_t *)bsw->buf;
    if (check_block(b.fn, (int64_t)(bx->len / itemsize), rows, n, ld, a, c) < 0) goto done;
    if (out_ld < c) {
        PyErr_SetString(PyExc_ValueError, "rank_columns: bad shape arguments");
        goto done;
    }
    for (int64_t q = 0; q < 2 * np; q++) {
        if (pairs[q] < 0 || pairs[q] >= n) {
            PyErr_SetString(PyExc_IndexError, "rank_columns: network wire out of range");
            goto done;
        }
    }
    if (check_indices(b.fn, "rank", ranks, nr, n) < 0) goto done;
    if (check_indices(b.fn, "summed wire", sw, ns, n) < 0) goto done;
    if (ns > 0 && bsums->len < c * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_IndexError, "rank_columns: sums is too small");
        goto done;
    }
    if (nr > 0 && (nr - 1) * out_ld + c > (int64_t)(bout->len / itemsize)) {
        PyErr_SetString(PyExc_IndexError, "rank_columns: out is too small");
        goto done;
    }
    const size_t tile_bytes = scratch_bytes(n);
    if (oscratch != NULL && oscratch != Py_None) {
        /* a caller-owned buffer reused across calls: no allocation (and no fresh pages for
         * the OS to zero) per call */
        if (!(bscratch = acquire(&b, oscratch, 1, "scratch"))) goto done;
        if ((size_t)bscratch->len < tile_bytes + 32) {
            PyErr_SetString(PyExc_IndexError, "rank_columns: scratch is too small");
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
    const int avx2 = have_avx2();
    double *sums = (double *)bsums->buf;
    int finite;
    Py_BEGIN_ALLOW_THREADS
#ifdef FORTIS_X86
    if (avx2 && itemsize == 4)
        finite = rank_f32_avx2((const float *)bx->buf, ld, rows, n, a, c, pairs, np, ranks, nr,
                               (float *)bout->buf, out_ld, sw, ns, sums, (vf32 *)tile);
    else if (avx2)
        finite = rank_f64_avx2((const double *)bx->buf, ld, rows, n, a, c, pairs, np, ranks, nr,
                               (double *)bout->buf, out_ld, sw, ns, sums, (vf64 *)tile);
    else
#endif
    if (itemsize == 4)
        finite = rank_f32_generic((const float *)bx->buf, ld, rows, n, a, c, pairs, np, ranks,
                                  nr, (float *)bout->buf, out_ld, sw, ns, sums, (vf32 *)tile);
    else
        finite = rank_f64_generic((const double *)bx->buf, ld, rows, n, a, c, pairs, np, ranks,
                                  nr, (double *)bout->buf, out_ld, sw, ns, sums, (vf64 *)tile);
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
    Py_ssize_t itemsize, ld, a, c;
    if (!PyArg_ParseTuple(args, "OnnOnnOO", &ox, &itemsize, &ld, &orows, &a, &c, &oz, &oout))
        return NULL;
    if (itemsize != 4 && itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "sq_dists: itemsize must be 4 or 8");
        return NULL;
    }
    Buffers b = {.fn = "sq_dists", .count = 0};
    PyObject *result = NULL;
    Py_buffer *bx, *brows, *bz, *bout;
    if (!(bx = acquire(&b, ox, 0, "X")) || !(brows = acquire(&b, orows, 0, "rows")) ||
        !(bz = acquire(&b, oz, 0, "z")) || !(bout = acquire(&b, oout, 1, "out")))
        goto done;
    const int64_t n = (int64_t)(brows->len / 8);
    const int64_t *rows = (const int64_t *)brows->buf;
    if (check_block(b.fn, (int64_t)(bx->len / itemsize), rows, n, ld, a, c) < 0) goto done;
    if (check_center(b.fn, bz, c) < 0) goto done;
    if (bout->len < n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_IndexError, "sq_dists: out is too small");
        goto done;
    }
    const double *z = bz->len ? (const double *)bz->buf : NULL;
    double *out = (double *)bout->buf;
    const int avx2 = have_avx2();
    Py_BEGIN_ALLOW_THREADS
#ifdef FORTIS_X86
    if (avx2 && itemsize == 4)
        sqdist_f32_avx2((const float *)bx->buf, ld, rows, n, a, c, z, out);
    else if (avx2)
        sqdist_f64_avx2((const double *)bx->buf, ld, rows, n, a, c, z, out);
    else
#endif
    if (itemsize == 4)
        sqdist_f32_generic((const float *)bx->buf, ld, rows, n, a, c, z, out);
    else
        sqdist_f64_generic((const double *)bx->buf, ld, rows, n, a, c, z, out);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    release_all(&b);
    return result;
}

static PyObject *
center_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *ox, *orows, *oz, *oout;
    Py_ssize_t ld, a, c, out_ld;
    if (!PyArg_ParseTuple(args, "OnOnnOOn", &ox, &ld, &orows, &a, &c, &oz, &oout, &out_ld))
        return NULL;
    Buffers b = {.fn = "center_rows", .count = 0};
    PyObject *result = NULL;
    Py_buffer *bx, *brows, *bz, *bout;
    if (!(bx = acquire(&b, ox, 0, "X")) || !(brows = acquire(&b, orows, 0, "rows")) ||
        !(bz = acquire(&b, oz, 0, "z")) || !(bout = acquire(&b, oout, 1, "out")))
        goto done;
    const int64_t n = (int64_t)(brows->len / 8);
    const int64_t *rows = (const int64_t *)brows->buf;
    if (check_block(b.fn, (int64_t)(bx->len / 4), rows, n, ld, a, c) < 0) goto done;
    if (out_ld < c) {
        PyErr_SetString(PyExc_ValueError, "center_rows: bad shape arguments");
        goto done;
    }
    if (check_center(b.fn, bz, c) < 0) goto done;
    if (bout->len < ((n - 1) * out_ld + c) * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_IndexError, "center_rows: out is too small");
        goto done;
    }
    const double *z = bz->len ? (const double *)bz->buf : NULL;
    float *out = (float *)bout->buf;
    const int avx2 = have_avx2();
    Py_BEGIN_ALLOW_THREADS
#ifdef FORTIS_X86
    if (avx2)
        center_avx2((const float *)bx->buf, ld, rows, n, a, c, z, out, out_ld);
    else
#endif
        center_generic((const float *)bx->buf, ld, rows, n, a, c, z, out, out_ld);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    release_all(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"rank_columns", rank_columns, METH_VARARGS,
     "rank_columns(X, itemsize, ld, rows, a, c, pairs, ranks, out, out_ld, sum_wires, sums): "
     "see the C "
     "source; called only through robust._ranking."},
    {"rank_scratch_bytes", rank_scratch_bytes, METH_O,
     "rank_scratch_bytes(n): bytes of the optional scratch buffer of rank_columns for n rows."},
    {"center_rows", center_rows, METH_VARARGS,
     "center_rows(X, ld, rows, a, c, z, out, out_ld): see the C source; float32 X only."},
    {"sq_dists", sq_dists, METH_VARARGS,
     "sq_dists(X, itemsize, ld, rows, a, c, z, out): see the C source; called only through "
     "robust._rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled kernels of robust (internal; see robust._native).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
