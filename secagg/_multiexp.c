/*
 * Compiled multi-exponentiation of secagg (internal, optional: secagg._native_multiexp falls
 * back to the pure-Python MultiExpTable when this module is not built).
 *
 * Many products over the same bases, prod_l base_l ** e_jl mod N for every row j, with N odd
 * (N = n**2 for Paillier ciphertexts), in Montgomery arithmetic on GMP's mpn layer: a product
 * is mpn_mul_n (or mpn_sqr) and a word-by-word Montgomery reduction with mpn_addmul_1, with
 * no division and no allocation.
 *
 * powers(modulus, bases, bits) -> bytes
 *     modulus: N as `limbs` little-endian 64-bit words (odd, top word non-zero);
 *     bases:   `count` values in Montgomery form (x * 2**(64*limbs) mod N), `limbs` words each;
 *     returns  count * bits values, base-major: entry (l, b) = base_l ** (2**b), Montgomery.
 *
 * products(modulus, table, k, bits, exps, elimbs) -> bytes
 *     table:   powers() of k bases (k * bits entries);
 *     exps:    rows * k exponents, `elimbs` little-endian 64-bit words each, all < 2**bits;
 *     returns  rows results prod_l base_l ** exps[j][l] mod N, `limbs` words each, in [0, N)
 *              (ordinary form, not Montgomery).
 *
 * Algorithm of products (Pippenger's output grouping on exponent bits): the rows are taken r
 * at a time. For a group, every table entry (l, b) goes into the bucket numbered by the r-bit
 * pattern "which rows of the group have bit b of their exponent l set" (one product per entry,
 * the first entry of a bucket is copied); then row g's result is the product of the buckets
 * whose pattern has bit g set, all r of them in about 2 * 2**r products by folding the bucket
 * array in halves. A group costs about k * bits + 2**r products, so r ~ 10 gives ~k * bits / 10
 * products per row instead of ~k * bits / 6 for a windowed bucket method per row.
 *
 * Both functions check every size before any work, raise ValueError on a mismatch and
 * MemoryError when scratch memory cannot be had, and release the GIL while they compute, so
 * threads calling them on disjoint work run in parallel. SOURCE_SHA256 is the SHA-256 of this
 * file, compiled in by setup.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP 16

typedef struct {
    mp_size_t n;         /* words of the modulus */
    const mp_limb_t *m;  /* the modulus, odd */
    mp_limb_t minv;      /* -m**-1 mod 2**64 */
    mp_limb_t *t;        /* scratch of 2n words */
} mont_t;

static mp_limb_t
neg_inverse(mp_limb_t m0)
{
    mp_limb_t inv = m0; /* m0 * m0 = 1 mod 8: 3 correct bits, doubled by each Newton step */
    for (int i = 0; i < 5; i++)
        inv *= 2 - m0 * inv;
    return (mp_limb_t)0 - inv;
}

/* r = t / 2**(64n) mod m for t < m * 2**(64n) (2n words, clobbered); r in [0, m). */
static void
redc(const mont_t *c, mp_limb_t *r, mp_limb_t *t)
{
    mp_size_t n = c->n;
    for (mp_size_t i = 0; i < n; i++) {
        /* t[i] becomes 0; the carry out belongs at word i + n and is parked in t[i] */
        t[i] = mpn_addmul_1(t + i, c->m, n, t[i] * c->minv);
    }
    mp_limb_t cy = mpn_add_n(r, t + n, t, n);
    if (cy || mpn_cmp(r, c->m, n) >= 0)
        mpn_sub_n(r, r, c->m, n);
}

/* r = a * b / 2**(64n) mod m; r may alias a or b. */
static void
mont_mul(const mont_t *c, mp_limb_t *r, const mp_limb_t *a, const mp_limb_t *b)
{
    if (a == b)
        mpn_sqr(c->t, a, c->n);
    else
        mpn_mul_n(c->t, a, b, c->n);
    redc(c, r, c->t);
}

typedef struct {
    Py_buffer view;
    int held;
} buf_t;

static int
get_buffer(PyObject *obj, buf_t *b, const char *name)
{
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object", name);
        return -1;
    }
    b->held = 1;
    return 0;
}

static void
release(buf_t *b)
{
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

/* The modulus as words; sets *n. Returns 0, or -1 with ValueError. */
static int
check_modulus(const buf_t *mb, mp_size_t *n)
{
    Py_ssize_t len = mb->view.len;
    if (len <= 0 || len % 8) {
        PyErr_SetString(PyExc_ValueError, "modulus must be a positive whole number of 64-bit words");
        return -1;
    }
    const mp_limb_t *m = (const mp_limb_t *)mb->view.buf;
    *n = (mp_size_t)(len / 8);
    if (!(m[0] & 1) || m[*n - 1] == 0 || (*n == 1 && m[0] < 3)) {
        PyErr_SetString(PyExc_ValueError, "modulus must be odd, >= 3, with a non-zero top word");
        return -1;
    }
    return 0;
}

static PyObject *
powers(PyObject *self, PyObject *args)
{
    PyObject *mobj, *bobj;
    Py_ssize_t bits;
    if (!PyArg_ParseTuple(args, "OOn", &mobj, &bobj, &bits))
        return NULL;
    buf_t mb = {0}, bb = {0};
    PyObject *out = NULL;
    mp_limb_t *scratch = NULL;
    mp_size_t n;
    if (get_buffer(mobj, &mb, "modulus") < 0 || get_buffer(bobj, &bb, "bases") < 0)
        goto done;
    if (check_modulus(&mb, &n) < 0)
        goto done;
    if (bits < 1 || bits > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "bits must be in [1, 2**20]");
        goto done;
    }
    Py_ssize_t word_bytes = 8 * (Py_ssize_t)n;
    if (bb.view.len % word_bytes) {
        PyErr_SetString(PyExc_ValueError, "bases must be whole values of the modulus's size");
        goto done;
    }
    Py_ssize_t count = bb.view.len / word_bytes;
    if (count > PY_SSIZE_T_MAX / word_bytes / bits) {
        PyErr_SetString(PyExc_ValueError, "table too large");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, count * bits * word_bytes);
    scratch = PyMem_RawMalloc(2 * word_bytes);
    if (out == NULL || scratch == NULL) {
        Py_CLEAR(out);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    const mp_limb_t *m = (const mp_limb_t *)mb.view.buf;
    const mp_limb_t *bases = (const mp_limb_t *)bb.view.buf;
    mp_limb_t *dst = (mp_limb_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t l = 0; l < count; l++) {
        if (mpn_cmp(bases + l * n, m, n) >= 0) {
            Py_CLEAR(out);
            PyErr_Format(PyExc_ValueError, "base %zd is not reduced modulo the modulus", l);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    mont_t c = {n, m, neg_inverse(m[0]), scratch};
    for (Py_ssize_t l = 0; l < count; l++) {
        mp_limb_t *row = dst + l * bits * n;
        mpn_copyi(row, bases + l * n, n);
        for (Py_ssize_t b = 1; b < bits; b++)
            mont_mul(&c, row + b * n, row + (b - 1) * n, row + (b - 1) * n);
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_RawFree(scratch);
    release(&mb);
    release(&bb);
    return out;
}

/* Products per row for a group of r rows, about (k*bits*(1 - 2**-r) + 2**(r+1)) / r. */
static int
best_group(Py_ssize_t entries, Py_ssize_t rows)
{
    int best = 1;
    double best_cost = 0;
    for (int r = 1; r <= MAX_GROUP && r <= rows; r++) {
        double cost = ((double)entries * (1.0 - 1.0 / (double)(1 << r)) + 2.0 * (1 << r)) / r;
        if (r == 1 || cost < best_cost) {
            best = r;
            best_cost = cost;
        }
    }
    return best;
}

typedef struct {
    const mont_t *c;
    mp_limb_t *bucket; /* 2**r values */
    unsigned char *set;
    uint32_t *pattern; /* bits values */
} group_work_t;

/* Results of rows [j0, j0 + r) in Montgomery form into acc (r values), acc_set flags. */
static void
group_products(group_work_t *w, const mp_limb_t *table, Py_ssize_t k, Py_ssize_t bits,
               const mp_limb_t *exps, Py_ssize_t elimbs, Py_ssize_t j0, int r, mp_limb_t *acc,
               unsigned char *acc_set)
{
    const mont_t *c = w->c;
    mp_size_t n = c->n;
    size_t size = (size_t)1 << r;
    memset(w->set, 0, size);
    for (Py_ssize_t l = 0; l < k; l++) {
        memset(w->pattern, 0, (size_t)bits * sizeof(uint32_t));
        for (int g = 0; g < r; g++) {
            const mp_limb_t *e = exps + ((j0 + g) * k + l) * elimbs;
            for (Py_ssize_t b = 0; b < bits; b++)
                w->pattern[b] |= (uint32_t)((e[b >> 6] >> (b & 63)) & 1) << g;
        }
        const mp_limb_t *entry = table + l * bits * n;
        for (Py_ssize_t b = 0; b < bits; b++, entry += n) {
            uint32_t v = w->pattern[b];
            if (!v)
                continue;
            mp_limb_t *dst = w->bucket + (size_t)v * n;
            if (w->set[v]) {
                mont_mul(c, dst, dst, entry);
            }
            else {
                mpn_copyi(dst, entry, n);
                w->set[v] = 1;
            }
        }
    }
    /* row g = product of the buckets with bit g set: take the top bit's half, then fold the
       top half onto the bottom half (bucket 0 is never read) and repeat one bit lower */
    for (int g = r - 1; g >= 0; g--) {
        size_t half = (size_t)1 << g;
        mp_limb_t *out = acc + (size_t)g * n;
        acc_set[g] = 0;
        for (size_t u = half; u < 2 * half; u++) {
            if (!w->set[u])
                continue;
            if (acc_set[g]) {
                mont_mul(c, out, out, w->bucket + u * n);
            }
            else {
                mpn_copyi(out, w->bucket + u * n, n);
                acc_set[g] = 1;
            }
        }
        for (size_t u = 1; u < half; u++) {
            if (!w->set[u + half])
                continue;
            mp_limb_t *dst = w->bucket + u * n;
            if (w->set[u]) {
                mont_mul(c, dst, dst, w->bucket + (u + half) * n);
            }
            else {
                mpn_copyi(dst, w->bucket + (u + half) * n, n);
                w->set[u] = 1;
            }
        }
    }
}

static PyObject *
products(PyObject *self, PyObject *args)
{
    PyObject *mobj, *tobj, *eobj;
    Py_ssize_t k, bits, elimbs;
    if (!PyArg_ParseTuple(args, "OOnnOn", &mobj, &tobj, &k, &bits, &eobj, &elimbs))
        return NULL;
    buf_t mb = {0}, tb = {0}, eb = {0};
    PyObject *out = NULL;
    mp_limb_t *scratch = NULL, *bucket = NULL, *acc = NULL;
    unsigned char *set = NULL, *acc_set = NULL;
    uint32_t *pattern = NULL;
    mp_size_t n;
    if (get_buffer(mobj, &mb, "modulus") < 0 || get_buffer(tobj, &tb, "table") < 0 ||
        get_buffer(eobj, &eb, "exps") < 0)
        goto done;
    if (check_modulus(&mb, &n) < 0)
        goto done;
    if (k < 1 || bits < 1 || bits > (1 << 20) || elimbs < 1 || elimbs * 64 < bits) {
        PyErr_SetString(PyExc_ValueError, "need k >= 1, 1 <= bits <= 64 * elimbs, bits <= 2**20");
        goto done;
    }
    Py_ssize_t word_bytes = 8 * (Py_ssize_t)n;
    if (k > PY_SSIZE_T_MAX / bits / word_bytes || tb.view.len != k * bits * word_bytes) {
        PyErr_SetString(PyExc_ValueError, "table does not hold k * bits values of the modulus's size");
        goto done;
    }
    Py_ssize_t row_bytes = k * elimbs * 8;
    if (eb.view.len % row_bytes) {
        PyErr_SetString(PyExc_ValueError, "exps must hold whole rows of k * elimbs words");
        goto done;
    }
    Py_ssize_t rows = eb.view.len / row_bytes;
    const mp_limb_t *exps = (const mp_limb_t *)eb.view.buf;
    /* every exponent below 2**bits: no word above, no bit above in the top word */
    Py_ssize_t top = (bits - 1) / 64, top_bits = bits - 64 * top;
    for (Py_ssize_t i = 0; i < rows * k; i++) {
        const mp_limb_t *e = exps + i * elimbs;
        int bad = top_bits < 64 && (e[top] >> top_bits) != 0;
        for (Py_ssize_t x = top + 1; x < elimbs && !bad; x++)
            bad = e[x] != 0;
        if (bad) {
            PyErr_Format(PyExc_ValueError, "exponent %zd of row %zd has more than %zd bits", i % k,
                         i / k, bits);
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, rows * word_bytes);
    if (out == NULL)
        goto done;
    if (rows == 0)
        goto done;
    int r = best_group(k * bits, rows);
    size_t size = (size_t)1 << r;
    scratch = PyMem_RawMalloc(2 * word_bytes);
    bucket = PyMem_RawMalloc(size * word_bytes);
    set = PyMem_RawMalloc(size);
    pattern = PyMem_RawMalloc((size_t)bits * sizeof(uint32_t));
    acc = PyMem_RawMalloc((size_t)(r + 2) * word_bytes); /* r results, then 2n words */
    acc_set = PyMem_RawMalloc((size_t)r);
    if (!scratch || !bucket || !set || !pattern || !acc || !acc_set) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    const mp_limb_t *m = (const mp_limb_t *)mb.view.buf;
    const mp_limb_t *table = (const mp_limb_t *)tb.view.buf;
    mp_limb_t *dst = (mp_limb_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    mont_t c = {n, m, neg_inverse(m[0]), scratch};
    group_work_t w = {&c, bucket, set, pattern};
    mp_limb_t *wide = acc + (size_t)r * n;
    for (Py_ssize_t j0 = 0; j0 < rows; j0 += r) {
        int g_count = (int)(rows - j0 < r ? rows - j0 : r);
        group_products(&w, table, k, bits, exps, elimbs, j0, g_count, acc, acc_set);
        for (int g = 0; g < g_count; g++) {
            mp_limb_t *res = dst + (j0 + g) * n;
            if (!acc_set[g]) { /* empty product */
                mpn_zero(res, n);
                res[0] = 1;
                continue;
            }
            /* leave Montgomery form: reduce (value, 0) */
            mpn_copyi(wide, acc + (size_t)g * n, n);
            mpn_zero(wide + n, n);
            redc(&c, res, wide);
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_RawFree(scratch);
    PyMem_RawFree(bucket);
    PyMem_RawFree(set);
    PyMem_RawFree(pattern);
    PyMem_RawFree(acc);
    PyMem_RawFree(acc_set);
    release(&mb);
    release(&tb);
    release(&eb);
    return out;
}

static PyMethodDef methods[] = {
    {"powers", powers, METH_VARARGS,
     "powers(modulus, bases, bits) -> bytes: base**(2**b) for b < bits, Montgomery form."},
    {"products", products, METH_VARARGS,
     "products(modulus, table, k, bits, exps, elimbs) -> bytes: prod_l base_l**e_jl mod N."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_multiexp",
    "Compiled multi-exponentiation of secagg (internal; see secagg._native_multiexp).", -1,
    methods,
};

#ifndef FORTIS_KERNEL_SOURCE_SHA256
#define FORTIS_KERNEL_SOURCE_SHA256 ""
#endif

PyMODINIT_FUNC
PyInit__multiexp(void)
{
    /* the buffers are read as little-endian 64-bit words, GMP's limbs */
    const uint16_t probe = 1;
    if (GMP_NUMB_BITS != 64 || sizeof(mp_limb_t) != 8 || *(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError,
                        "secagg._multiexp needs 64-bit GMP limbs on a little-endian machine");
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL &&
        PyModule_AddStringConstant(m, "SOURCE_SHA256", FORTIS_KERNEL_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
