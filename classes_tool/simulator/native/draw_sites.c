/*
 * Compiled fast path of sites.generate_sites (see native_sites.py).
 *
 * Site i of a target is drawn from its own generator, NumPy's
 * default_rng([seed, crc32(target), i]): SeedSequence -> PCG64 -> Generator. This file
 * rebuilds that generator (seeding and raw output) and calls NumPy's own distribution
 * functions (libnpyrandom) for every draw, in exactly the order and with exactly the
 * arguments of sites.py / patterns.py, so each site comes out bit for bit the same.
 *
 * Anything unusual (a parameter Python would reject or convert oddly, an argsort tie, an
 * empty range, ...) abandons the site: it is marked, and Python redraws that one site with
 * the reference code from its own generator. Out-of-range values stop at the exponent draw:
 * NumPy's `10.0 ** u` may use SIMD code whose results differ from C's pow, so Python finishes
 * them (with NumPy) after this pass.
 *
 * Build with -ffp-contract=off: a fused multiply-add would round differently from NumPy.
 */

#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "numpy/random/bitgen.h"

/* From NumPy's distributions.h (which also pulls in Python.h, not needed here). */
extern double random_standard_uniform(bitgen_t *bitgen_state);
extern double random_uniform(bitgen_t *bitgen_state, double lower, double range);
extern uint64_t random_interval(bitgen_t *bitgen_state, uint64_t max);
extern uint64_t random_bounded_uint64(bitgen_t *bitgen_state, uint64_t off, uint64_t rng,
                                      uint64_t mask, bool use_masked);
extern void random_bounded_uint64_fill(bitgen_t *bitgen_state, uint64_t off, uint64_t rng,
                                       ptrdiff_t cnt, bool use_masked, uint64_t *out);

/* ------------------------------------------------------------------------------------ */
/* SeedSequence (pool of 4 words) and PCG64, as NumPy defines them                      */
/* ------------------------------------------------------------------------------------ */

#define SS_INIT_A 0x43b0d7e5u
#define SS_MULT_A 0x931e8875u
#define SS_INIT_B 0x8b51f9ddu
#define SS_MULT_B 0x58f38dedu
#define SS_MIX_L 0xca01f9ddu
#define SS_MIX_R 0x4973f715u
#define SS_POOL 4

static uint32_t ss_hashmix(uint32_t value, uint32_t *hash_const) {
    value ^= *hash_const;
    *hash_const *= SS_MULT_A;
    value *= *hash_const;
    return value ^ (value >> 16);
}

static uint32_t ss_mix(uint32_t x, uint32_t y) {
    uint32_t r = SS_MIX_L * x - SS_MIX_R * y;
    return r ^ (r >> 16);
}

/* generate_state(4, uint64) of SeedSequence(entropy words) */
static void seed_sequence_state(const uint32_t *entropy, int64_t n, uint64_t out[4]) {
    uint32_t pool[SS_POOL], hash_const = SS_INIT_A;
    for (int i = 0; i < SS_POOL; i++)
        pool[i] = ss_hashmix(i < n ? entropy[i] : 0, &hash_const);
    for (int src = 0; src < SS_POOL; src++)
        for (int dst = 0; dst < SS_POOL; dst++)
            if (src != dst) pool[dst] = ss_mix(pool[dst], ss_hashmix(pool[src], &hash_const));
    for (int64_t src = SS_POOL; src < n; src++)
        for (int dst = 0; dst < SS_POOL; dst++)
            pool[dst] = ss_mix(pool[dst], ss_hashmix(entropy[src], &hash_const));
    uint32_t words[8];
    hash_const = SS_INIT_B;
    for (int i = 0; i < 8; i++) {
        uint32_t v = pool[i % SS_POOL] ^ hash_const;
        hash_const *= SS_MULT_B;
        v *= hash_const;
        words[i] = v ^ (v >> 16);
    }
    for (int i = 0; i < 4; i++) out[i] = (uint64_t)words[2 * i] | ((uint64_t)words[2 * i + 1] << 32);
}

typedef __uint128_t u128;
#define PCG_MULT (((u128)2549297995355413924ULL << 64) | 4865540595714422341ULL)

typedef struct {
    u128 state, inc;
    int has_uint32;    /* NumPy hands out a 64-bit output as two 32-bit draws */
    uint32_t uinteger;
} pcg64_t;

static void pcg64_seed(pcg64_t *g, const uint64_t s[4]) {
    u128 initstate = ((u128)s[0] << 64) | s[1], initseq = ((u128)s[2] << 64) | s[3];
    g->state = 0;
    g->inc = (initseq << 1) | 1;
    g->state = g->state * PCG_MULT + g->inc;
    g->state += initstate;
    g->state = g->state * PCG_MULT + g->inc;
    g->has_uint32 = 0;
    g->uinteger = 0;
}

static uint64_t pcg64_next64(void *st) {
    pcg64_t *g = st;
    g->state = g->state * PCG_MULT + g->inc;  /* step, then XSL-RR of the new state */
    uint64_t x = (uint64_t)(g->state >> 64) ^ (uint64_t)g->state;
    unsigned rot = (unsigned)(g->state >> 122);
    return (x >> rot) | (x << ((64 - rot) & 63));
}

static uint32_t pcg64_next32(void *st) {
    pcg64_t *g = st;
    if (g->has_uint32) {
        g->has_uint32 = 0;
        return g->uinteger;
    }
    uint64_t next = pcg64_next64(st);
    g->has_uint32 = 1;
    g->uinteger = (uint32_t)(next >> 32);
    return (uint32_t)next;
}

static double pcg64_next_double(void *st) {
    return (double)(pcg64_next64(st) >> 11) * (1.0 / 9007199254740992.0);
}

/* Exposed for the tests: the generator state after seeding from `entropy` and drawing
 * `n_draws` 32-bit words; out = state hi, state lo, inc hi, inc lo, has_uint32, uinteger. */
void classes_rng_state(const uint32_t *entropy, int64_t n, int64_t n_draws, uint64_t out[6]) {
    uint64_t seed[4];
    pcg64_t g;
    seed_sequence_state(entropy, n, seed);
    pcg64_seed(&g, seed);
    for (int64_t i = 0; i < n_draws; i++) pcg64_next32(&g);
    out[0] = (uint64_t)(g.state >> 64);
    out[1] = (uint64_t)g.state;
    out[2] = (uint64_t)(g.inc >> 64);
    out[3] = (uint64_t)g.inc;
    out[4] = (uint64_t)g.has_uint32;
    out[5] = g.uinteger;
}

/* ------------------------------------------------------------------------------------ */
/* The prepared error model (built by native_sites.py from sites._Plan)                  */
/* ------------------------------------------------------------------------------------ */

/* A parameter slot: the value a generator reads, already converted as Python converts it. */
enum { SLOT_NONE = 0, SLOT_INT = 1, SLOT_BIN = 2, SLOT_PYTHON = 3, SLOT_RANDOM = 4 };
typedef struct {
    int64_t tag;
    int64_t i;        /* SLOT_INT: the int; SLOT_RANDOM: index of the parameter set's entry */
    double lo, span;  /* SLOT_BIN: float(low), float(high) - float(low) */
} slot_t;

/* Slots by role (native_sites.py maps each class's JSON keys onto them). */
enum {
    S_PCT, S_CAP, S_MIN, S_MAX,                   /* count bin, its cap, an _int_in pair */
    S_CH_PCT, S_CH_CAP, S_CH_MIN, S_CH_MAX,       /* _channels */
    S_PICK, S_SKIP, S_UNIQUE, S_BLOCK, S_RH, S_RW,
    N_SLOTS
};

typedef struct { int64_t off, n, sorted; double total; } choice_t;  /* _Choice */

typedef struct {
    int64_t gen;              /* generator id (G_*), -1: unknown class (Python raises) */
    int64_t param_choice;     /* index into choices */
    int64_t param_off;        /* first parameter set */
    int64_t domain_choice;
    int64_t domain_off;       /* first domain */
} class_t;

typedef struct {
    int64_t slot_off;         /* N_SLOTS slots */
    int64_t random_off, n_random;
    int64_t by_range;         /* "min/max_errors_per_channel" in the parameters */
} params_t;

typedef struct {
    int64_t n;                /* number of choices */
    int64_t slot;             /* the slot it fills, -1 when no generator reads it */
    int64_t choice_off;       /* its n converted choices in choice_slots */
} random_t;

enum { D_PYTHON = 0, D_RANDOM = 1, D_SINGLE = 2, D_PAIR = 3, D_GENERAL = 4 };
typedef struct {
    int64_t kind, n;
    int64_t ids[5];
    double a[5], b[5];        /* D_RANDOM: a = cumulative class probabilities; otherwise bins
                                 as (low, high - low) */
    double total;
} domain_t;

typedef struct {
    int64_t n_classes;
    int64_t affine;           /* patterns.AFFINE_UNIFORM */
    int64_t class_choice;
    const double *cum;        /* cumulative weights of every choice */
    const choice_t *choices;
    const class_t *classes;
    const params_t *params;
    const slot_t *slots;
    const random_t *randoms;
    const slot_t *choice_slots;
    const domain_t *domains;
} plan_t;

enum {
    G_SINGLE, G_SAME_ROW, G_SAME_COLUMN, G_BULLET_WAKE, G_SKIP_2, G_SKIP_4, G_SKIP_8, G_SKIP_16,
    G_SINGLE_BLOCK, G_MULTI_CHANNEL_BLOCK, G_SHATTERED, G_QUASI_SHATTERED, G_FULL_CHANNELS,
    G_RECTANGLES, G_SINGLE_CHANNEL_RANDOM, G_ALTERNATED_BLOCKS, G_UNCATEGORIZED
};

/* ------------------------------------------------------------------------------------ */
/* Per-call workspace                                                                   */
/* ------------------------------------------------------------------------------------ */

typedef struct { int64_t *v; int64_t n, cap; } vec_t;

typedef struct {
    bitgen_t bitgen;
    pcg64_t pcg;
    jmp_buf abandon;          /* longjmp here: Python draws this site */
    const plan_t *plan;
    int64_t h, w, c;
    slot_t slot[N_SLOTS];     /* the site's resolved parameters */
    int64_t by_range;
    vec_t pos;                /* the site's positions */
    vec_t perm, tmp, cls;
    uint8_t *mark;            /* h * w flags, all zero between uses */
    uint8_t *keep;            /* channel x map-position flags of _grid */
    int64_t keep_cap;
} ctx_t;

static void abandon(ctx_t *x) { longjmp(x->abandon, 1); }

static void vec_reserve(ctx_t *x, vec_t *v, int64_t n) {
    if (n <= v->cap) return;
    int64_t cap = v->cap ? v->cap : 64;
    while (cap < n) cap *= 2;
    int64_t *p = realloc(v->v, (size_t)cap * sizeof(int64_t));
    if (!p) abandon(x);
    v->v = p;
    v->cap = cap;
}

static void push(ctx_t *x, vec_t *v, int64_t value) {
    if (v->n == v->cap) vec_reserve(x, v, v->n + 1);
    v->v[v->n++] = value;
}

/* ascending sort of a[0..n): quicksort, insertion sort on short runs (qsort's callback per
 * comparison was most of a shattered site's time) */
static void sort_i64(int64_t *a, int64_t n) {
    while (n > 16) {
        int64_t p = a[n / 2], i = 0, j = n - 1;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) {
                int64_t t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        /* recurse into the shorter side, loop on the longer one */
        if (j + 1 < n - i) {
            sort_i64(a, j + 1);
            a += i;
            n -= i;
        } else {
            sort_i64(a + i, n - i);
            n = j + 1;
        }
    }
    for (int64_t i = 1; i < n; i++) {
        int64_t v = a[i], j = i;
        for (; j > 0 && a[j - 1] > v; j--) a[j] = a[j - 1];
        a[j] = v;
    }
}

static void sort_unique(vec_t *v, bool unique) {
    sort_i64(v->v, v->n);
    if (!unique || v->n < 2) return;
    int64_t k = 1;
    for (int64_t i = 1; i < v->n; i++)
        if (v->v[i] != v->v[k - 1]) v->v[k++] = v->v[i];
    v->n = k;
}

/* ------------------------------------------------------------------------------------ */
/* Draws: each is one Generator call of the Python code                                 */
/* ------------------------------------------------------------------------------------ */

static double draw_random(ctx_t *x) {  /* rng.random() */
    return random_standard_uniform(&x->bitgen);
}

static int64_t draw_int(ctx_t *x, int64_t low, int64_t high) {  /* rng.integers(low, high) */
    if (high <= low) abandon(x);  /* ValueError in Python */
    uint64_t out;
    random_bounded_uint64_fill(&x->bitgen, (uint64_t)low, (uint64_t)(high - 1 - low), 1, false,
                               &out);
    return (int64_t)out;
}

/* patterns._uniform on a bin: low + span * rng.random() when that is exactly rng.uniform
 * (patterns.AFFINE_UNIFORM), else rng.uniform(low, high) itself */
static double draw_bin(ctx_t *x, const slot_t *s) {
    if (x->plan->affine) return s->lo + s->span * draw_random(x);
    return random_uniform(&x->bitgen, s->lo, s->span);
}

/* rng.permutation(n) into x->perm: arange(n), then Fisher-Yates from the end */
static void draw_permutation(ctx_t *x, int64_t n) {
    vec_reserve(x, &x->perm, n);
    int64_t *p = x->perm.v;
    for (int64_t i = 0; i < n; i++) p[i] = i;
    for (int64_t i = n - 1; i >= 1; i--) {
        int64_t j = (int64_t)random_interval(&x->bitgen, (uint64_t)i);
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    x->perm.n = n;
}

/* rng.choice(pop, size, replace=False) as a set, appended to `out` as v * mul + add. The
 * callers sort the result, so only which values are drawn matters, and the draws made. */
static void draw_choice(ctx_t *x, int64_t pop, int64_t size, vec_t *out, int64_t mul,
                        int64_t add) {
    if (pop <= 0 || size > pop || size < 0) abandon(x);
    if (pop > 10000 && size > pop / 50) {
        /* tail shuffle of arange(pop): the last `size` entries */
        vec_reserve(x, &x->tmp, pop);
        int64_t *p = x->tmp.v;
        for (int64_t i = 0; i < pop; i++) p[i] = i;
        int64_t stop = pop - size > 1 ? pop - size : 1;
        for (int64_t i = pop - 1; i >= stop; i--) {
            int64_t j = (int64_t)random_bounded_uint64(&x->bitgen, 0, (uint64_t)i, 0, false);
            int64_t t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        for (int64_t i = pop - size; i < pop; i++) push(x, out, p[i] * mul + add);
        return;
    }
    /* Floyd's algorithm: for j in [pop - size, pop), draw v in [0, j]; take v, or j if v is
     * taken already */
    x->tmp.n = 0;
    vec_reserve(x, &x->tmp, size);
    for (int64_t j = pop - size; j < pop; j++) {
        int64_t v = (int64_t)random_bounded_uint64(&x->bitgen, 0, (uint64_t)j, 0, false);
        if (x->mark[v]) v = j;
        x->mark[v] = 1;
        x->tmp.v[x->tmp.n++] = v;
    }
    /* then the result is shuffled: its draws only */
    for (int64_t i = size - 1; i >= 1; i--)
        random_bounded_uint64(&x->bitgen, 0, (uint64_t)i, 0, false);
    for (int64_t i = 0; i < x->tmp.n; i++) {
        x->mark[x->tmp.v[i]] = 0;
        push(x, out, x->tmp.v[i] * mul + add);
    }
}

/* ------------------------------------------------------------------------------------ */
/* patterns.py helpers                                                                  */
/* ------------------------------------------------------------------------------------ */

static const slot_t *slot(ctx_t *x, int role) { return &x->slot[role]; }

/* _count: how many of n items a percentage bin selects, at least 1, at most n (and cap) */
static int64_t count_of(ctx_t *x, int64_t n, int pct_role, int cap_role) {
    const slot_t *pct = slot(x, pct_role);
    double fraction = 1.0;
    if (pct->tag == SLOT_BIN)
        fraction = draw_bin(x, pct) / 100.0;
    else if (pct->tag != SLOT_NONE)
        abandon(x);
    double k_exact = (double)n * fraction;
    if (!(fabs(k_exact) < 4e18)) abandon(x);  /* round() raises on nan/inf */
    int64_t k = (int64_t)nearbyint(k_exact);  /* round(): half to even */
    if (cap_role >= 0) {
        const slot_t *cap = slot(x, cap_role);
        if (cap->tag == SLOT_INT) {
            if (cap->i < k) k = cap->i;
        } else if (cap->tag != SLOT_NONE) {
            abandon(x);
        }
    }
    if (k < 1) k = 1;
    if (k > n) k = n;
    return k;
}

/* a slot read as int(p.get(key, default)): the default is in the slot already */
static int64_t need_int(ctx_t *x, int role) {
    if (slot(x, role)->tag != SLOT_INT) abandon(x);
    return slot(x, role)->i;
}

static int64_t int_or(ctx_t *x, int role, int64_t none) {
    const slot_t *s = slot(x, role);
    if (s->tag == SLOT_NONE) return none;
    if (s->tag != SLOT_INT) abandon(x);
    return s->i;
}

/* _int_in: rng.integers(min, max + 1) of (low or default, high or low) */
static int64_t int_in(ctx_t *x, int low_role, int high_role, int64_t dflt) {
    int64_t low = int_or(x, low_role, dflt), high = int_or(x, high_role, low);
    return draw_int(x, low < high ? low : high, (low < high ? high : low) + 1);
}

typedef struct { int64_t start, step, n; } range_t;

/* _spaced: k indices in [0, n) spaced by skip (shrunk to fit); one index when k <= 1 */
static range_t spaced(ctx_t *x, int64_t n, int64_t k, int64_t skip) {
    range_t r;
    if (k <= 1) {
        r.start = draw_int(x, 0, n);
        r.step = 1;
        r.n = 1;
        return r;
    }
    int64_t fit = (n - 1) / (k - 1);
    skip = skip < fit ? skip : fit;
    if (skip < 1) skip = 1;
    r.start = draw_int(x, 0, n - (k - 1) * skip);
    r.step = skip;
    r.n = k;
    return r;
}

/* _channels: count from affected_channels_pct (capped), then the skip, then the spacing */
static range_t channels(ctx_t *x) {
    int64_t k = count_of(x, x->c, S_CH_PCT, S_CH_CAP);
    int64_t skip = int_in(x, S_CH_MIN, S_CH_MAX, 1);
    return spaced(x, x->c, k, skip);
}

/* _picks + _grid: positions maps[t] * c + chan for every channel of `chans`, keeping in each
 * channel the first k of a fresh permutation of the n map positions (all of them when the
 * bin is absent or k >= n). Emitted in (map position, channel) order: already sorted. */
static void grid(ctx_t *x, const int64_t *maps, int64_t n, range_t chans, int pick_role) {
    const slot_t *pct = slot(x, pick_role);
    uint8_t *keep = NULL;
    if (pct->tag != SLOT_NONE) {
        int64_t need = n * chans.n;
        if (need > x->keep_cap) {
            uint8_t *p = realloc(x->keep, (size_t)need);
            if (!p) abandon(x);
            x->keep = p;
            x->keep_cap = need;
        }
        keep = x->keep;
        for (int64_t j = 0; j < chans.n; j++) {
            uint8_t *row = keep + j * n;
            int64_t k = count_of(x, n, pick_role, -1);
            if (k >= n) {
                memset(row, 1, (size_t)n);
                continue;
            }
            draw_permutation(x, n);
            memset(row, 0, (size_t)n);
            for (int64_t t = 0; t < k; t++) row[x->perm.v[t]] = 1;
        }
    }
    vec_reserve(x, &x->pos, x->pos.n + n * chans.n);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < chans.n; j++)
            if (!keep || keep[j * n + t])
                x->pos.v[x->pos.n++] = maps[t] * x->c + chans.start + j * chans.step;
}

/* the map positions start .. stop-1 (step) in x->tmp */
static const int64_t *arange(ctx_t *x, int64_t start, int64_t stop, int64_t step, int64_t *n) {
    int64_t k = stop > start ? (stop - start + step - 1) / step : 0;
    vec_reserve(x, &x->tmp, k);
    for (int64_t i = 0; i < k; i++) x->tmp.v[i] = start + i * step;
    x->tmp.n = k;
    *n = k;
    return x->tmp.v;
}

/* ------------------------------------------------------------------------------------ */
/* The spatial classes (patterns.GENERATORS), positions into x->pos, sorted and distinct */
/* ------------------------------------------------------------------------------------ */

static void gen_single(ctx_t *x) {
    int64_t ch = draw_int(x, 0, x->c);
    push(x, &x->pos, draw_int(x, 0, x->h * x->w) * x->c + ch);
}

static void gen_line(ctx_t *x, bool along_row) {
    int64_t length = along_row ? x->w : x->h;
    int64_t k = count_of(x, length, S_PCT, S_CAP);
    int64_t skip = int_in(x, S_MIN, S_MAX, 1);  /* drawn before _spaced's start */
    range_t steps = spaced(x, length, k, skip);
    int64_t first, step;
    if (along_row) {
        first = draw_int(x, 0, x->h) * x->w + steps.start;
        step = steps.step;
    } else {
        first = steps.start * x->w + draw_int(x, 0, x->w);
        step = steps.step * x->w;
    }
    int64_t ch = draw_int(x, 0, x->c);
    for (int64_t j = 0; j < steps.n; j++) push(x, &x->pos, j * (step * x->c) + first * x->c + ch);
}

static void gen_bullet_wake(ctx_t *x) {
    int64_t m = draw_int(x, 0, x->h * x->w);
    range_t chans = channels(x);
    for (int64_t j = 0; j < chans.n; j++) push(x, &x->pos, chans.start + j * chans.step + m * x->c);
}

static void gen_skip(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t skip = need_int(x, S_SKIP);  /* the class's default skip when the key is absent */
    if (skip < 1) skip = 1;
    int64_t unique = need_int(x, S_UNIQUE), most = (size + skip - 1) / skip;
    if (unique > most) unique = most;
    if (unique < 1) unique = 1;
    int64_t span = size - (unique - 1) * skip;
    int64_t start = draw_int(x, 0, span > 1 ? span : 1);
    int64_t stop = start + unique * skip < size ? start + unique * skip : size;
    int64_t n;
    const int64_t *candidates = arange(x, start, stop, skip, &n);
    range_t chans = channels(x);
    grid(x, candidates, n, chans, S_PICK);
}

/* _block: an aligned block of block_size consecutive map positions, clipped to the map */
static range_t block(ctx_t *x, int64_t size) {
    int64_t b = int_or(x, S_BLOCK, 1);
    if (b > size) b = size;
    if (b < 1) b = 1;
    int64_t n_blocks = (size + b - 1) / b;
    range_t r;
    r.start = draw_int(x, 0, n_blocks) * b;
    r.n = (r.start + b < size ? r.start + b : size) - r.start;
    r.step = 1;
    return r;
}

static void gen_single_block(ctx_t *x) {
    range_t blk = block(x, x->h * x->w);
    int64_t ch = draw_int(x, 0, x->c);
    const slot_t *pct = slot(x, S_PICK);
    int64_t k = pct->tag == SLOT_NONE ? blk.n : count_of(x, blk.n, S_PICK, -1);
    if (k >= blk.n) {
        for (int64_t t = 0; t < blk.n; t++) push(x, &x->pos, (blk.start + t) * x->c + ch);
        return;
    }
    draw_permutation(x, blk.n);
    for (int64_t t = 0; t < k; t++) push(x, &x->pos, (blk.start + x->perm.v[t]) * x->c + ch);
    sort_unique(&x->pos, false);
}

static void gen_multi_channel_block(ctx_t *x) {
    range_t blk = block(x, x->h * x->w);
    range_t chans = channels(x);
    int64_t n;
    const int64_t *maps = arange(x, blk.start, blk.start + blk.n, 1, &n);
    grid(x, maps, n, chans, S_PICK);
}

/* shattered glass: an anchor, and in each channel a span of neighbours around it (quasi: the
 * span may drift off the anchor) */
static void gen_shattered(ctx_t *x, bool quasi) {
    int64_t size = x->h * x->w;
    int64_t anchor = draw_int(x, 0, size);
    int64_t low = int_or(x, S_MIN, 1), high = int_or(x, S_MAX, low);
    int64_t lo = low < high ? low : high, hi = (low < high ? high : low) + 1;
    range_t chans = channels(x);
    const slot_t *pct = slot(x, S_PICK);
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t ch = chans.start + j * chans.step;
        int64_t width = draw_int(x, lo, hi);
        if (width > size) width = size;
        if (width < 1) width = 1;
        int64_t start = anchor - draw_int(x, 0, width);
        if (start < 0) start = 0;
        if (start > size - width) start = size - width;
        /* _pick(width): the first k of a permutation, or the whole span */
        int64_t k = pct->tag == SLOT_NONE ? width : count_of(x, width, S_PICK, -1);
        bool whole = k >= width;
        if (!whole) draw_permutation(x, width);
        int64_t shift = 0;
        if (quasi) {
            double r = draw_random(x);  /* drawn whatever the width */
            if (r < 0.5 && width > 1) shift = draw_int(x, 1, width + 1);
        }
        if (whole) {
            int64_t a = start, b = start + width;
            if (shift) {
                a = start + shift < size - 1 ? start + shift : size - 1;
                b = start + width + shift < size ? start + width + shift : size;
            }
            for (int64_t m = a; m < b; m++) push(x, &x->pos, m * x->c + ch);
        } else {
            for (int64_t t = 0; t < k; t++) {
                int64_t m = x->perm.v[t] + start;
                if (shift) m = m + shift < size - 1 ? m + shift : size - 1;
                push(x, &x->pos, m * x->c + ch);
            }
            if (!quasi) push(x, &x->pos, anchor * x->c + ch);  /* a set with the anchor */
        }
    }
    sort_unique(&x->pos, true);  /* the Python sets */
}

static void gen_full_channels(ctx_t *x) {
    int64_t size = x->h * x->w, n;
    range_t chans = channels(x);
    const int64_t *maps = arange(x, 0, size, 1, &n);
    grid(x, maps, n, chans, S_PICK);
}

static void gen_rectangles(ctx_t *x) {
    int64_t rh = need_int(x, S_RH), rw = need_int(x, S_RW);
    rh = rh < x->h ? rh : x->h;
    rw = rw < x->w ? rw : x->w;
    if (rh < 1) rh = 1;
    if (rw < 1) rw = 1;
    int64_t top = draw_int(x, 0, x->h - rh + 1);
    int64_t left = draw_int(x, 0, x->w - rw + 1);
    vec_reserve(x, &x->tmp, rh * rw);
    int64_t n = 0;
    for (int64_t r = 0; r < rh; r++)
        for (int64_t q = 0; q < rw; q++) x->tmp.v[n++] = (top + r) * x->w + left + q;
    range_t chans = channels(x);
    slot_t none = {SLOT_NONE, 0, 0.0, 0.0};
    x->slot[S_PICK] = none;  /* no picks: every channel keeps the whole rectangle */
    grid(x, x->tmp.v, n, chans, S_PICK);
}

static void gen_single_channel_random(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t k = count_of(x, size, S_PCT, S_CAP);
    int64_t ch = draw_int(x, 0, x->c);
    draw_choice(x, size, k, &x->pos, x->c, ch);
    sort_unique(&x->pos, false);
}

static void gen_alternated_blocks(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t b = need_int(x, S_BLOCK);
    if (b > size) b = size;
    if (b < 1) b = 1;
    int64_t n_blocks = (size + b - 1) / b;
    int64_t skip = int_in(x, S_MIN, S_MAX, 2);
    if (skip < 2) skip = 2;
    int64_t first = draw_int(x, 0, skip < n_blocks ? skip : n_blocks);
    int64_t ch = draw_int(x, 0, x->c);
    for (int64_t blk = first; blk < n_blocks; blk += skip)
        for (int64_t t = 0; t < b && blk * b + t < size; t++)
            push(x, &x->pos, (blk * b + t) * x->c + ch);
}

static void gen_uncategorized(ctx_t *x) {
    int64_t size = x->h * x->w;
    range_t chans = channels(x);
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t k;
        if (x->by_range) {
            k = int_in(x, S_MIN, S_MAX, 1);
            if (k > size) k = size;
        } else {
            k = count_of(x, size, S_PCT, -1);
        }
        draw_choice(x, size, k > 1 ? k : 1, &x->pos, x->c, chans.start + j * chans.step);
    }
    sort_unique(&x->pos, false);
}

static void generate(ctx_t *x, int64_t gen) {
    switch (gen) {
    case G_SINGLE: gen_single(x); break;
    case G_SAME_ROW: gen_line(x, true); break;
    case G_SAME_COLUMN: gen_line(x, false); break;
    case G_BULLET_WAKE: gen_bullet_wake(x); break;
    case G_SKIP_2:
    case G_SKIP_4:
    case G_SKIP_8:
    case G_SKIP_16: gen_skip(x); break;
    case G_SINGLE_BLOCK: gen_single_block(x); break;
    case G_MULTI_CHANNEL_BLOCK: gen_multi_channel_block(x); break;
    case G_SHATTERED: gen_shattered(x, false); break;
    case G_QUASI_SHATTERED: gen_shattered(x, true); break;
    case G_FULL_CHANNELS: gen_full_channels(x); break;
    case G_RECTANGLES: gen_rectangles(x); break;
    case G_SINGLE_CHANNEL_RANDOM: gen_single_channel_random(x); break;
    case G_ALTERNATED_BLOCKS: gen_alternated_blocks(x); break;
    case G_UNCATEGORIZED: gen_uncategorized(x); break;
    default: abandon(x);  /* an unknown class: Python raises its KeyError */
    }
}

/* ------------------------------------------------------------------------------------ */
/* Choices, value classes and values (sites.py)                                         */
/* ------------------------------------------------------------------------------------ */

/* bisect_right: how many of the sorted a[0..n) are <= v (NaN v: n, as Python's bisect) */
static int64_t bisect_right(const double *a, int64_t n, double v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (v < a[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* _Choice.pick (and pick_one, which makes the same draw) */
static int64_t pick(ctx_t *x, int64_t which) {
    const choice_t *ch = &x->plan->choices[which];
    if (ch->n == 0) abandon(x);
    if (ch->total <= 0) return draw_int(x, 0, ch->n);
    double v = draw_random(x) * ch->total;
    if (!ch->sorted) abandon(x);  /* Python uses np.searchsorted on unsorted sums */
    int64_t i = bisect_right(x->plan->cum + ch->off, ch->n, v);
    return i < ch->n - 1 ? i : ch->n - 1;
}

enum { IN_RANGE, OUT_OF_RANGE, ZERO, NAN_CLASS, INF_CLASS, N_CLASSES };

/* _split_pair: counts of two bins; false on a tie of remainders (np.argsort decides) */
static bool split_pair(double a0, double a1, int64_t n, int64_t counts[2]) {
    double s = a0 + a1, e0, e1;
    if (s > 0) {
        e0 = a0 / s * (double)n;
        e1 = a1 / s * (double)n;
    } else {
        e0 = e1 = 0.5 * (double)n;
    }
    counts[0] = (int64_t)floor(e0);
    counts[1] = (int64_t)floor(e1);
    int64_t missing = n - (counts[0] + counts[1]);
    if (missing) {
        double r0 = -(e0 - (double)counts[0]), r1 = -(e1 - (double)counts[1]);
        if (r0 == r1) return false;
        int first = r0 < r1 ? 0 : 1;
        counts[first] += 1;
        if (missing > 1) counts[1 - first] += 1;
    }
    return true;
}

/* _split on 3..5 bins: normalised (np.sum adds left to right below 8 entries), floored, the
 * largest remainders get the missing ones; false when a tie straddles the cut */
static bool split_general(const double *share_in, int64_t m, int64_t n, int64_t *counts) {
    double share[5], exact[5], key[5], s = 0.0;
    for (int64_t i = 0; i < m; i++) s += share_in[i];
    int64_t total = 0;
    for (int64_t i = 0; i < m; i++) {
        share[i] = s > 0 ? share_in[i] / s : 1.0 / (double)m;
        exact[i] = share[i] * (double)n;
        counts[i] = (int64_t)floor(exact[i]);
        total += counts[i];
        key[i] = -(exact[i] - (double)counts[i]);
    }
    int64_t missing = n - total;
    if (missing <= 0) return missing == 0;
    if (missing > m) return false;
    /* rank the keys ascending (smallest key = largest remainder) */
    int64_t order[5];
    for (int64_t i = 0; i < m; i++) order[i] = i;
    for (int64_t i = 1; i < m; i++)
        for (int64_t j = i; j > 0 && key[order[j]] < key[order[j - 1]]; j--) {
            int64_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (missing < m && !(key[order[missing - 1]] < key[order[missing]])) return false;
    for (int64_t i = 0; i < missing; i++) counts[order[i]] += 1;
    return true;
}

/* _Domain.layout: one value class per position into x->cls */
static void layout(ctx_t *x, const domain_t *d, int64_t n) {
    vec_reserve(x, &x->cls, n);
    int64_t *cls = x->cls.v;
    x->cls.n = n;
    if (d->kind == D_RANDOM) {
        for (int64_t t = 0; t < n; t++) {
            int64_t i = bisect_right(d->a, N_CLASSES, draw_random(x) * d->total);
            cls[t] = i < N_CLASSES - 1 ? i : N_CLASSES - 1;
        }
        return;
    }
    if (d->kind == D_SINGLE) {
        draw_random(x);           /* the only bin's share */
        draw_permutation(x, n);   /* the shuffle of n equal ids */
        for (int64_t t = 0; t < n; t++) cls[t] = d->ids[0];
        return;
    }
    if (d->kind == D_PAIR) {
        double share[2];
        for (int i = 0; i < 2; i++) {
            if (x->plan->affine)
                share[i] = d->a[i] + d->b[i] * draw_random(x);
            else  /* rng.uniform(low, low + span): its range is (low + span) - low */
                share[i] = random_uniform(&x->bitgen, d->a[i], (d->a[i] + d->b[i]) - d->a[i]);
        }
        int64_t counts[2];
        if (!split_pair(share[0], share[1], n, counts)) abandon(x);
        /* the first bin's positions are where permutation(n) < counts[0] */
        draw_permutation(x, n);
        for (int64_t t = 0; t < n; t++) cls[t] = x->perm.v[t] < counts[0] ? d->ids[0] : d->ids[1];
        return;
    }
    if (d->kind == D_GENERAL) {
        double share[5];
        int64_t counts[5];
        for (int64_t i = 0; i < d->n; i++) share[i] = random_uniform(&x->bitgen, d->a[i], d->b[i]);
        if (!split_general(share, d->n, n, counts)) abandon(x);
        /* permutation(repeat(ids, counts)) is repeat(ids, counts)[permutation(n)] */
        draw_permutation(x, n);
        for (int64_t t = 0; t < n; t++) {
            int64_t r = x->perm.v[t], i = 0;
            while (r >= counts[i]) r -= counts[i++];
            cls[t] = d->ids[i];
        }
        return;
    }
    abandon(x);
}

/* ------------------------------------------------------------------------------------ */
/* The sites                                                                            */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    int32_t *positions;       /* capacity entries */
    float *values;
    int64_t capacity;
    int64_t used;             /* in: entries already filled; out: after this call */
    int64_t *oor_at;          /* out-of-range entries for Python to finish: index into values, */
    double *oor_exponent;     /* the exponent drawn for 10.0 ** u, */
    uint8_t *oor_up;          /* and whether it lies above the range */
    int64_t n_oor;
    int64_t need;             /* out: entries the site that did not fit needs */
    int32_t *lengths;         /* per site (0 for a site left to Python) */
    int32_t *splits;          /* per site + 1: used after it, as generate_sites' int32 splits */
    int32_t *patterns;        /* per site: class index, -1 when Python must draw it */
} out_t;

/* One site into x->pos / x->cls and its values into out (when they fit). Returns 0 when
 * drawn, 1 when abandoned (out untouched), 2 when it needs more room than out has. */
static int draw_one(ctx_t *x, const uint32_t *entropy, int64_t n_entropy, double low,
                    double high, out_t *out, int32_t *pattern) {
    const plan_t *plan = x->plan;
    uint64_t seed[4];
    seed_sequence_state(entropy, n_entropy, seed);
    pcg64_seed(&x->pcg, seed);
    x->pos.n = 0;
    if (setjmp(x->abandon)) return 1;

    /* _Plan.draw: class, parameter set, its RANDOM entries in order, positions, domain */
    int64_t k = pick(x, plan->class_choice);
    const class_t *cl = &plan->classes[k];
    const params_t *ps = &plan->params[cl->param_off + pick(x, cl->param_choice)];
    memcpy(x->slot, plan->slots + ps->slot_off, sizeof(x->slot));
    x->by_range = ps->by_range;
    for (int64_t r = 0; r < ps->n_random; r++) {
        const random_t *rd = &plan->randoms[ps->random_off + r];
        int64_t i = draw_int(x, 0, rd->n);
        if (rd->slot >= 0) x->slot[rd->slot] = plan->choice_slots[rd->choice_off + i];
    }
    for (int s = 0; s < N_SLOTS; s++)
        if (x->slot[s].tag == SLOT_RANDOM) abandon(x);  /* a RANDOM left unresolved */
    generate(x, cl->gen);
    const domain_t *d = &plan->domains[cl->domain_off + pick(x, cl->domain_choice)];
    int64_t n = x->pos.n;
    layout(x, d, n);

    if (out->used + n > out->capacity) {
        out->need = n;
        return 2;
    }
    /* _values: class by class in increasing order, each drawing for its positions in order */
    float *val = out->values + out->used;
    double width = high - low;
    if (fabs(high) > width) width = fabs(high);
    if (fabs(low) > width) width = fabs(low);
    if (1e-3 > width) width = 1e-3;
    int64_t oor_start = out->n_oor;
    const int64_t *cls = x->cls.v;
    int64_t counts[N_CLASSES] = {0};
    for (int64_t t = 0; t < n; t++) counts[cls[t]]++;
    for (int c = 0; c < N_CLASSES; c++) {
        int64_t count = counts[c];
        if (!count) continue;
        if (c == IN_RANGE) {
            double span = high - low;
            if (high > low && !isfinite(span)) {
                out->n_oor = oor_start;
                abandon(x);  /* OverflowError in rng.uniform */
            }
            for (int64_t t = 0; t < n; t++)
                if (cls[t] == c)
                    val[t] = (float)(high > low ? random_uniform(&x->bitgen, low, span) : low);
        } else if (c == OUT_OF_RANGE) {
            /* all the exponents, then all the sides; Python computes the values */
            for (int64_t t = 0; t < n; t++)
                if (cls[t] == c) {
                    out->oor_at[out->n_oor] = out->used + t;
                    out->oor_exponent[out->n_oor++] = random_uniform(&x->bitgen, -2.0, 8.0);
                    val[t] = 0.0f;
                }
            for (int64_t q = out->n_oor - count; q < out->n_oor; q++)
                out->oor_up[q] = draw_random(x) < 0.5;
        } else if (c == INF_CLASS) {
            for (int64_t t = 0; t < n; t++)
                if (cls[t] == c) val[t] = draw_random(x) < 0.5 ? INFINITY : -INFINITY;
        } else if (c == NAN_CLASS) {
            for (int64_t t = 0; t < n; t++)
                if (cls[t] == c) val[t] = (float)NAN;
        } else {
            for (int64_t t = 0; t < n; t++)
                if (cls[t] == c) val[t] = 0.0f;
        }
    }
    for (int64_t t = 0; t < n; t++) out->positions[out->used + t] = (int32_t)x->pos.v[t];
    out->used += n;
    *pattern = (int32_t)k;
    return 0;
}

/*
 * Draw sites first+start .. first+count-1 of a target on an h x w x c output: entropy words
 * `prefix` (seed and crc32(target) as SeedSequence splits them) followed by the site index,
 * sites appended to `out` (from out->used on). Returns the index
 * (relative to first) of the first site not drawn: count when all are, less when out ran
 * out of room (out->need says how much that site needs); -1 when memory ran out.
 */
int64_t classes_draw_sites(const plan_t *plan, int64_t h, int64_t w, int64_t c, double low,
                           double high, const uint32_t *prefix, int64_t n_prefix,
                           uint64_t first, int64_t start, int64_t count, out_t *out) {
    ctx_t *x = calloc(1, sizeof(ctx_t));
    if (!x) return -1;
    x->bitgen.state = &x->pcg;
    x->bitgen.next_uint64 = pcg64_next64;
    x->bitgen.next_uint32 = pcg64_next32;
    x->bitgen.next_double = pcg64_next_double;
    x->bitgen.next_raw = pcg64_next64;
    x->plan = plan;
    x->h = h;
    x->w = w;
    x->c = c;
    int64_t result = -1;
    uint32_t entropy[16];
    x->mark = calloc((size_t)(x->h * x->w), 1);
    if (!x->mark || n_prefix > 14) goto done;
    memcpy(entropy, prefix, (size_t)n_prefix * sizeof(uint32_t));
    int64_t j;
    for (j = start; j < count; j++) {
        uint64_t i = first + (uint64_t)j;
        int64_t n = n_prefix;
        entropy[n++] = (uint32_t)i;  /* an int as SeedSequence splits it: 32-bit words */
        if (i >> 32) entropy[n++] = (uint32_t)(i >> 32);
        int32_t pattern = -1;
        int status = draw_one(x, entropy, n, low, high, out, &pattern);
        if (status == 2) break;
        out->lengths[j] = status == 0 ? (int32_t)x->pos.n : 0;
        out->splits[j + 1] = (int32_t)out->used;
        out->patterns[j] = status == 0 ? pattern : -1;
    }
    result = j;
done:
    free(x->mark);
    free(x->keep);
    free(x->pos.v);
    free(x->perm.v);
    free(x->tmp.v);
    free(x->cls.v);
    free(x);
    return result;
}

/* The out-of-range values once Python has computed power = 10.0 ** exponent with NumPy:
 * width * power above high or below low, as _class_values computes them, as float32. */
void classes_finish_out_of_range(float *values, const int64_t *at, const double *power,
                                 const uint8_t *up, int64_t n, double low, double high,
                                 double width) {
    for (int64_t i = 0; i < n; i++) {
        double excess = width * power[i];
        values[at[i]] = (float)(up[i] ? high + excess : low - excess);
    }
}
