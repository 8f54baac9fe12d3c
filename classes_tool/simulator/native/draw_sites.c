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
    int64_t checked;          /* the classifier's name for the class (K_*), -1: drawn unchecked */
} class_t;

typedef struct {
    int64_t slot_off;         /* N_SLOTS slots */
    int64_t random_off, n_random;
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
    int64_t max_attempts;     /* patterns.MAX_ATTEMPTS: draws of a checked class's positions */
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
    bool settle;              /* the site's last draw (patterns.LAST_DRAW) */
    vec_t pos;                /* the site's positions */
    vec_t perm, tmp, cls, aux;
    vec_t chans, maps;        /* classify's corrupted channels and per-channel map positions */
    int64_t *chan_count;      /* c counters, all zero between uses */
    int64_t *chan_start;      /* c offsets into maps */
    uint8_t *keep;            /* channel x map-position flags of _grid */
    int64_t keep_cap;
} ctx_t;

static void abandon(ctx_t *x) { longjmp(x->abandon, 1); }

/* Everything a context (calloc'ed, so what it never allocated is NULL) holds, and itself. */
static void ctx_free(ctx_t *x) {
    free(x->keep);
    free(x->pos.v);
    free(x->perm.v);
    free(x->tmp.v);
    free(x->cls.v);
    free(x->aux.v);
    free(x->chans.v);
    free(x->maps.v);
    free(x->chan_count);
    free(x->chan_start);
    free(x);
}

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

/* _channels: count from affected_channels_pct (capped, then at least `at_least` when the
 * tensor has them), then the skip, then the spacing */
static range_t channels(ctx_t *x, int64_t at_least) {
    int64_t k = count_of(x, x->c, S_CH_PCT, S_CH_CAP);
    if (k < at_least) k = at_least;
    if (k > x->c) k = x->c;
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
    if (k < 2) k = 2;  /* one position is `single` */
    if (k > length) k = length;
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
    range_t chans = channels(x, 2);
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
    range_t chans = channels(x, 1);
    grid(x, candidates, n, chans, S_PICK);
}

/* block_counts: the fewest errors a block of b positions holds by definition (the most is b) */
static int64_t block_least(int64_t b) {
    int64_t half = b / 2 + 1, low = half > 11 ? half : 11;
    return low < b ? low : b;
}

/* _block_count: errors in a block of b, the percentage bin kept within block_counts(b) */
static int64_t block_count(ctx_t *x, int64_t b, int pct_role) {
    int64_t k = slot(x, pct_role)->tag == SLOT_NONE ? b : count_of(x, b, pct_role, -1);
    int64_t low = block_least(b);
    if (k < low) k = low;
    return k < b ? k : b;
}

/* a block size read as int(p.get("block_size") or 1), clipped to [1, most] */
static int64_t block_size(ctx_t *x, int64_t most) {
    int64_t b = need_int(x, S_BLOCK);
    if (b > most) b = most;
    return b < 1 ? 1 : b;
}

/* _single_block: a window of the channel-first flattened tensor, any start */
static void gen_single_block(ctx_t *x) {
    int64_t size = x->h * x->w, total = size * x->c;
    int64_t b = block_size(x, total);
    int64_t start = draw_int(x, 0, total - b + 1);
    int64_t k = block_count(x, b, S_PICK);
    bool whole = k >= b;
    if (!whole) draw_permutation(x, b);  /* _window: the first k of a permutation */
    for (int64_t t = 0; t < (whole ? b : k); t++) {
        int64_t u = start + (whole ? t : x->perm.v[t]);
        push(x, &x->pos, (u % size) * x->c + u / size);
    }
    sort_unique(&x->pos, false);
}

/* _multi_channel_block: one window of map positions in every chosen channel, the leader
 * holding a block and the window's first position */
static void gen_multi_channel_block(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t b = block_size(x, size);
    int64_t start = draw_int(x, 0, size - b + 1);
    range_t chans = channels(x, 2);
    bool all = slot(x, S_PICK)->tag == SLOT_NONE;
    x->aux.n = 0;
    vec_reserve(x, &x->aux, chans.n);
    int64_t fullest = 0;
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t k = all ? b : count_of(x, b, S_PICK, -1);
        x->aux.v[x->aux.n++] = k;
        if (k > fullest) fullest = k;
    }
    int64_t leader = draw_int(x, 0, chans.n), low = block_least(b);
    if (fullest < low) fullest = low;
    x->aux.v[leader] = fullest < b ? fullest : b;
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t k = x->aux.v[j], ch = chans.start + j * chans.step;
        if (j == leader && k < b) {
            push(x, &x->pos, start * x->c + ch);
            draw_permutation(x, b - 1);
            for (int64_t t = 0; t < k - 1; t++)
                push(x, &x->pos, (start + x->perm.v[t] + 1) * x->c + ch);
        } else if (k >= b) {
            for (int64_t t = 0; t < b; t++) push(x, &x->pos, (start + t) * x->c + ch);
        } else {
            draw_permutation(x, b);
            for (int64_t t = 0; t < k; t++) push(x, &x->pos, (start + x->perm.v[t]) * x->c + ch);
        }
    }
    sort_unique(&x->pos, false);
}

/* patterns.SPAN_MOST: the most errors a settled span keeps (10 or fewer are never a block) */
#define SPAN_MOST 10

/* keep the entries of sel[0..*n) below width, in order */
static void keep_below(int64_t *sel, int64_t *n, int64_t width) {
    int64_t k = 0;
    for (int64_t i = 0; i < *n; i++)
        if (sel[i] < width) sel[k++] = sel[i];
    *n = k;
}

/* _block_of: the block size of k sorted indices from first to last, 0 when not one block */
static int64_t block_of(int64_t n, int64_t first, int64_t last, int64_t largest);

/* _block_leader: the channel (0..n-1) whose block makes the channels, each given by the count,
 * first and last of its sorted map positions, a multi-channel block; -1 when they are not one */
static int64_t block_leader(const int64_t *count, const int64_t *first, const int64_t *last,
                            int64_t n, int64_t size) {
    int64_t best = -1, begin = size, lead = -1;
    for (int64_t j = 0; j < n; j++) {
        int64_t b = block_of(count[j], first[j], last[j], size);
        if (b && (b > best || (b == best && first[j] < begin))) {
            best = b;
            begin = first[j];
            lead = j;
        }
    }
    if (lead < 0) return -1;
    for (int64_t j = 0; j < n; j++)
        if (!((first[j] >= begin && last[j] <= begin + best)
              || block_of(count[j], first[j], last[j], 64)))
            return -1;
    return lead;
}

/* _shattered's settling (patterns.SPAN_MOST): channel j's positions are pos[at[j] ..
 * at[j + 1]); each is sorted and made distinct first, then while the channels form a
 * multi-channel block, its leader keeps only its `most` positions nearest the anchor (a tie:
 * the one before it); the channels are packed back into pos at the end */
static void settle_spans(ctx_t *x, int64_t n, int64_t anchor, int64_t most) {
    int64_t size = x->h * x->w, c = x->c;
    int64_t *at = x->aux.v, *count = at + n + 1, *first = count + n, *last = first + n;
    int64_t *p = x->pos.v;
    bool dense = false;
    for (int64_t j = 0; j < n; j++) {
        int64_t *seg = p + at[j], k = at[j + 1] - at[j], u = 1;
        if (k < 1) abandon(x);  /* every span keeps a position (Python's min() would raise) */
        sort_i64(seg, k);
        for (int64_t i = 1; i < k; i++)
            if (seg[i] != seg[u - 1]) seg[u++] = seg[i];
        count[j] = u;
        first[j] = seg[0] / c;
        last[j] = seg[u - 1] / c;
        if (u > most) dense = true;
    }
    int64_t lead;
    while (dense && n > 1 && (lead = block_leader(count, first, last, n, size)) >= 0) {
        int64_t *seg = p + at[lead], k = count[lead], lo = 0, hi;
        while (lo < k && seg[lo] / c < anchor) lo++;  /* bisect_left */
        hi = lo;
        while (hi - lo < most) {
            if (lo > 0 && (hi == k || anchor - seg[lo - 1] / c <= seg[hi] / c - anchor)) lo--;
            else hi++;
        }
        memmove(seg, seg + lo, (size_t)most * sizeof(int64_t));
        count[lead] = most;
        first[lead] = seg[0] / c;
        last[lead] = seg[most - 1] / c;
    }
    int64_t used = 0;
    for (int64_t j = 0; j < n; j++) {
        memmove(p + used, p + at[j], (size_t)count[j] * sizeof(int64_t));
        used += count[j];
    }
    x->pos.n = used;
}

/* _shattered: an anchor corrupted in every chosen channel with a span around it (quasi: in the
 * first two only, the last channel's span beside the span those two share, the others may
 * drift off it); on the settling draw, dense spans that form a multi-channel block are cut */
static void gen_shattered(ctx_t *x, bool quasi) {
    int64_t size = x->h * x->w;
    int64_t anchor = draw_int(x, 0, size);
    int64_t low = int_or(x, S_MIN, 1), high = int_or(x, S_MAX, low);
    int64_t lo = low < high ? low : high, hi = (low < high ? high : low) + 1;
    range_t chans = channels(x, quasi ? 3 : 2);
    int64_t last = chans.n - 1;
    bool all = slot(x, S_PICK)->tag == SLOT_NONE;
    int64_t shared_lo = 0, shared_hi = 0;  /* the span channels 0 and 1 share (inclusive) */
    x->aux.n = 0;
    if (x->settle) vec_reserve(x, &x->aux, 4 * (chans.n + 1));
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t ch = chans.start + j * chans.step;
        if (x->settle) x->aux.v[j] = x->pos.n;
        /* _span: width, start, then _pick(width) */
        int64_t width = draw_int(x, lo, hi);
        if (width > size) width = size;
        if (width < 1) width = 1;
        int64_t start = anchor - draw_int(x, 0, width);
        if (start < 0) start = 0;
        if (start > size - width) start = size - width;
        bool has_sel = false;
        int64_t n_sel = 0;
        if (!all) {
            int64_t k = count_of(x, width, S_PICK, -1);
            if (k < width) {
                draw_permutation(x, width);
                has_sel = true;
                n_sel = k;
            }
        }
        int64_t *sel = x->perm.v;
        if (j == 0 && width * 2 > size && size > 1) {  /* at most half: not full_channels */
            width = size / 2;
            start = anchor - draw_int(x, 0, width);
            if (start < 0) start = 0;
            if (start > size - width) start = size - width;
            if (has_sel) {
                keep_below(sel, &n_sel, width);
                if (n_sel == 0) has_sel = false;
            }
        }
        if (j == 0) {
            shared_lo = start;
            shared_hi = start + width - 1;
        } else if (j == 1) {
            if (start > shared_lo) shared_lo = start;
            if (start + width - 1 < shared_hi) shared_hi = start + width - 1;
        }
        if (quasi && j == last && j >= 2 && size > 1) {  /* beside the shared span */
            int64_t room_right = size - 1 - shared_hi, room_left = shared_lo;
            int64_t room = room_right > room_left ? room_right : room_left;
            if (width > room) width = room;
            if (width < 1) width = 1;
            bool right = room_right >= width && (room_left < width || draw_random(x) < 0.5);
            start = right ? shared_hi + 1 : shared_lo - width;
            if (has_sel) {
                keep_below(sel, &n_sel, width);
                if (n_sel == 0) {
                    if (width == 1) {
                        has_sel = false;
                    } else {
                        sel[0] = 0;
                        n_sel = 1;
                    }
                }
            }
        }
        int64_t shift = 0;
        if (!quasi || j < 2) {
            if (has_sel) push(x, &x->pos, anchor * x->c + ch);
        } else if (j < last && draw_random(x) < 0.5 && width > 1) {
            shift = draw_int(x, 1, width + 1);
        }
        for (int64_t t = 0; t < (has_sel ? n_sel : width); t++) {
            int64_t m = start + (has_sel ? sel[t] : t);
            if (shift) m = m + shift < size - 1 ? m + shift : size - 1;
            push(x, &x->pos, m * x->c + ch);
        }
    }
    if (x->settle) {
        x->aux.v[chans.n] = x->pos.n;
        settle_spans(x, chans.n, anchor, SPAN_MOST);
    }
    sort_unique(&x->pos, true);  /* the Python sets */
}

/* _full_channels: more than half of every chosen channel */
static void gen_full_channels(ctx_t *x) {
    int64_t size = x->h * x->w, least = size / 2 + 1;
    range_t chans = channels(x, 1);
    bool all = slot(x, S_PICK)->tag == SLOT_NONE;
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t ch = chans.start + j * chans.step, k = size;
        if (!all) {
            k = count_of(x, size, S_PICK, -1);
            if (k < least) k = least;
        }
        if (k >= size) {
            for (int64_t m = 0; m < size; m++) push(x, &x->pos, m * x->c + ch);
        } else {
            draw_permutation(x, size);
            for (int64_t t = 0; t < k; t++) push(x, &x->pos, x->perm.v[t] * x->c + ch);
        }
    }
    sort_unique(&x->pos, false);
}

/* _rectangles: (height + 1) x (width + 1), narrower than the map, in every chosen channel; one
 * that fills more than half the map leaves out cells of one chosen channel */
static void gen_rectangles(ctx_t *x) {
    int64_t rh = need_int(x, S_RH) + 1, rw = need_int(x, S_RW) + 1;
    int64_t narrower = x->w - 1 > 1 ? x->w - 1 : 1;
    rh = rh < x->h ? rh : x->h;
    rw = rw < narrower ? rw : narrower;
    if (rh < 1) rh = 1;
    if (rw < 1) rw = 1;
    int64_t top = draw_int(x, 0, x->h - rh + 1);
    int64_t left = draw_int(x, 0, x->w - rw + 1);
    vec_reserve(x, &x->tmp, rh * rw);
    int64_t n = 0;
    for (int64_t r = 0; r < rh; r++)
        for (int64_t q = 0; q < rw; q++) x->tmp.v[n++] = (top + r) * x->w + left + q;
    range_t chans = channels(x, 1);
    int64_t out = n - x->h * x->w / 2;  /* cells to leave out: a channel holds half the map */
    if (rh >= 3 && rw >= 3 && out > 0 && (chans.n > 1 || out <= 2)) {
        int64_t j = draw_int(x, 0, chans.n);
        draw_permutation(x, n);  /* channel j keeps the cells perm[:n - out] */
        if (n > x->keep_cap) {
            uint8_t *p = realloc(x->keep, (size_t)n);
            if (!p) abandon(x);
            x->keep = p;
            x->keep_cap = n;
        }
        memset(x->keep, 0, (size_t)n);
        for (int64_t t = 0; t < n - out; t++) x->keep[x->perm.v[t]] = 1;
        vec_reserve(x, &x->pos, x->pos.n + n * chans.n);
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < chans.n; i++)
                if (i != j || x->keep[t])
                    x->pos.v[x->pos.n++] = x->tmp.v[t] * x->c + chans.start + i * chans.step;
        return;
    }
    slot_t none = {SLOT_NONE, 0, 0.0, 0.0};
    x->slot[S_PICK] = none;  /* no picks: every channel keeps the whole rectangle */
    grid(x, x->tmp.v, n, chans, S_PICK);
}

/* _single_channel_random: k positions, each a gap in [min, max value skip] after the last,
 * crossing a row boundary when the map has two rows */
static void gen_single_channel_random(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t k = count_of(x, size, S_PCT, S_CAP);
    if (k < 2) k = 2;
    if (k > size) k = size;
    int64_t low = int_or(x, S_MIN, 1), high = int_or(x, S_MAX, low);
    int64_t fit = (size - 1) / (k - 1 > 1 ? k - 1 : 1);
    if (fit < 1) fit = 1;
    int64_t a = low < high ? low : high, b = low < high ? high : low;
    if (a < 1) a = 1;
    if (b < 1) b = 1;
    a = a < fit ? a : fit;
    b = b < fit ? b : fit;
    vec_reserve(x, &x->aux, k > 1 ? k : 1);
    vec_reserve(x, &x->tmp, k > 1 ? k : 1);
    int64_t *off = x->tmp.v, n = 1;
    off[0] = 0;
    if (k > 1) {  /* rng.integers(a, b + 1, size=k - 1): one fill, as NumPy draws it */
        uint64_t *gaps = (uint64_t *)x->aux.v;
        random_bounded_uint64_fill(&x->bitgen, (uint64_t)a, (uint64_t)(b - a), k - 1, false,
                                   gaps);
        for (int64_t i = 0; i < k - 1; i++) {
            int64_t gap = (int64_t)gaps[i];
            if (off[n - 1] + gap > size - 1) break;
            off[n] = off[n - 1] + gap;
            n++;
        }
    }
    int64_t span = off[n - 1], start;
    if (x->h >= 2 && 0 < span && span < x->w) {  /* a start whose positions cross a row */
        int64_t i = draw_int(x, 0, (x->h - 1) * span);
        start = (i / span) * x->w + (x->w - span) + i % span;
    } else {
        start = draw_int(x, 0, size - span);
    }
    int64_t ch = draw_int(x, 0, x->c);
    for (int64_t t = 0; t < n; t++) push(x, &x->pos, (start + off[t]) * x->c + ch);
}

static void gen_alternated_blocks(ctx_t *x) {
    int64_t size = x->h * x->w;
    int64_t b = need_int(x, S_BLOCK);
    if (b > size) b = size;
    if (b < 1) b = 1;
    int64_t n_blocks = (size + b - 1) / b;
    int64_t skip = int_in(x, S_MIN, S_MAX, 2);
    if (skip < 2) skip = 2;
    int64_t room = skip < n_blocks - skip ? skip : n_blocks - skip;  /* room for a second */
    int64_t first = draw_int(x, 0, room > 1 ? room : 1);
    int64_t ch = draw_int(x, 0, x->c);
    for (int64_t blk = first; blk < n_blocks; blk += skip)
        for (int64_t t = 0; t < b && blk * b + t < size; t++)
            push(x, &x->pos, (blk * b + t) * x->c + ch);
}

/* _uncategorized: two channels or more, no map position shared */
static void gen_uncategorized(ctx_t *x) {
    int64_t size = x->h * x->w;
    range_t chans = channels(x, 2);
    const slot_t *least = slot(x, S_MIN), *most = slot(x, S_MAX);
    if ((least->tag != SLOT_NONE && least->tag != SLOT_INT)
        || (most->tag != SLOT_NONE && most->tag != SLOT_INT))
        abandon(x);
    x->aux.n = 0;
    vec_reserve(x, &x->aux, chans.n);
    int64_t *counts = x->aux.v, sum = 0, top = 0;
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t k = count_of(x, size, S_PCT, -1);
        if (least->tag == SLOT_INT && least->i > k) k = least->i;
        if (most->tag == SLOT_INT && most->i < k) k = most->i;
        if (k < 1) k = 1;
        /* the loop below brings every count above size down to size first */
        counts[j] = k < size ? k : size;
        sum += counts[j];
        if (counts[j] > top) top = counts[j];
    }
    /* while the sum exceeds the map and the largest count is over 1, the first largest count
     * loses one: level by level, in channel order */
    while (sum > size && top > 1) {
        for (int64_t j = 0; j < chans.n && sum > size; j++)
            if (counts[j] == top) {
                counts[j]--;
                sum--;
            }
        if (sum > size) top--;
    }
    int64_t total = sum < size ? sum : size, at = 0;
    draw_permutation(x, size);  /* permutation(size)[:total], dealt to the channels in turn */
    for (int64_t j = 0; j < chans.n; j++) {
        int64_t ch = chans.start + j * chans.step;
        for (int64_t t = 0; t < counts[j] && at < total; t++, at++)
            push(x, &x->pos, x->perm.v[at] * x->c + ch);
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
/* patterns.classify: the class CLASSES' classifier gives the site's positions           */
/* ------------------------------------------------------------------------------------ */

/* in the classifier's orders (patterns.SINGLE_CHANNEL_ORDER, MULTI_CHANNEL_ORDER) */
enum {
    K_SINGLE, K_SKIP_4, K_SINGLE_BLOCK, K_ALTERNATED, K_SAME_ROW, K_FULL_CHANNELS,
    K_RECTANGLES, K_SINGLE_CHANNEL_RANDOM, K_MULTI_CHANNEL_BLOCK, K_BULLET_WAKE, K_SHATTERED,
    K_QUASI_SHATTERED, K_UNCATEGORIZED
};

/* _block_size_of on n sorted indices from first to last: 0 when they are not one block */
static int64_t block_of(int64_t n, int64_t first, int64_t last, int64_t largest) {
    if (n <= 10) return 0;
    int64_t b = n <= 16 ? 16 : n <= 32 ? 32 : n <= 64 ? 64 : 0;
    return b && last - first <= b && largest >= b ? b : 0;
}

static bool is_rectangle(int64_t top, int64_t bottom, int64_t left, int64_t right, int64_t cells,
                         int64_t w) {
    if (bottom - top < 2 || right - left < 2 || (left == 0 && right == w - 1)) return false;
    return (bottom - top + 1) * (right - left + 1) - cells <= 2;
}

/* _is_alternated on the sorted map positions of one channel */
static bool is_alternated(const int64_t *m, int64_t n, int64_t size) {
    int64_t remainder = size % 32 ? size / 32 : -1, blocks = 0, prev = 0;
    for (int64_t i = 0; i < n;) {
        int64_t blk = m[i] / 32, count = 0;
        for (; i < n && m[i] / 32 == blk; i++) count++;
        if (blocks && blk - prev < 2) return false;
        if (count < 16 && blk != remainder) return false;
        prev = blk;
        blocks++;
    }
    return blocks >= 2;
}

/* The class of x->pos (sorted, distinct flat positions, as every generator leaves them). */
static int64_t classify(ctx_t *x) {
    const int64_t *p = x->pos.v;
    int64_t n = x->pos.n, c = x->c, w = x->w, size = x->h * x->w;
    if (n == 0) abandon(x);  /* Python's classify raises on no positions */
    vec_reserve(x, &x->chans, n);  /* nothing below allocates (count[] is cleared at the end) */
    vec_reserve(x, &x->maps, n);
    int64_t *count = x->chan_count, *start = x->chan_start;
    /* the corrupted channels, in increasing order */
    x->chans.n = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t ch = p[i] % c;
        if (count[ch]++ == 0) x->chans.v[x->chans.n++] = ch;
    }
    sort_i64(x->chans.v, x->chans.n);
    const int64_t *chans = x->chans.v;
    int64_t nch = x->chans.n, at = 0;
    bool full = true;
    for (int64_t j = 0; j < nch; j++) {
        start[chans[j]] = at;
        at += count[chans[j]];
        if (count[chans[j]] * 2 <= size) full = false;
    }
    /* each channel's map positions, sorted (p is sorted by map position, then channel); the
     * distinct map positions, how many channels hold the most shared one, the column span */
    int64_t *maps = x->maps.v, distinct = 0, sharing = 0, run = 0, prev = -1;
    int64_t left = w, right = -1, first_map = p[0] / c, good = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t m = p[i] / c, ch = p[i] % c, col = m % w;
        maps[start[ch]++] = m;
        if (m != prev) {
            distinct++;
            good += (m - first_map) % 4 == 0;
            run = 0;
            prev = m;
        }
        if (++run > sharing) sharing = run;
        if (col < left) left = col;
        if (col > right) right = col;
    }
    for (int64_t j = 0; j < nch; j++) start[chans[j]] -= count[chans[j]];  /* back to starts */
    int64_t top = first_map / w, bottom = (p[n - 1] / c) / w, result;
    int64_t lo_ch = chans[0], hi_ch = chans[nch - 1];
    if (nch == 1 && n == 1) {
        result = K_SINGLE;
    } else if (good >= 2 && distinct - good <= 1) {
        result = K_SKIP_4;
    } else if (block_of(n, lo_ch * size + maps[start[lo_ch]],
                        hi_ch * size + maps[start[hi_ch] + count[hi_ch] - 1], size)) {
        result = K_SINGLE_BLOCK;
    } else if (nch == 1) {
        if (is_alternated(maps, n, size)) result = K_ALTERNATED;
        else if (top == bottom) result = K_SAME_ROW;
        else if (full) result = K_FULL_CHANNELS;
        else if (is_rectangle(top, bottom, left, right, distinct, w)) result = K_RECTANGLES;
        else result = K_SINGLE_CHANNEL_RANDOM;
    } else {
        /* multi-channel block: a leader (largest block, then earliest) and every channel
         * within [its first, first + block size] or a block of its own */
        int64_t best = -1, first = size;
        for (int64_t j = 0; j < nch; j++) {
            const int64_t *m = maps + start[chans[j]];
            int64_t k = count[chans[j]], b = block_of(k, m[0], m[k - 1], size);
            if (b && (b > best || (b == best && m[0] < first))) {
                best = b;
                first = m[0];
            }
        }
        bool block = best >= 0;
        for (int64_t j = 0; block && j < nch; j++) {
            const int64_t *m = maps + start[chans[j]];
            int64_t k = count[chans[j]];
            block = (m[0] >= first && m[k - 1] <= first + best) || block_of(k, m[0], m[k - 1], 64);
        }
        if (block) result = K_MULTI_CHANNEL_BLOCK;
        else if (distinct == 1) result = K_BULLET_WAKE;
        else if (full) result = K_FULL_CHANNELS;
        else if (is_rectangle(top, bottom, left, right, distinct, w)) result = K_RECTANGLES;
        else if (sharing == nch) result = K_SHATTERED;
        else if (sharing >= 2) result = K_QUASI_SHATTERED;
        else result = K_UNCATEGORIZED;
    }
    for (int64_t j = 0; j < nch; j++) count[chans[j]] = 0;
    return result;
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
    /* patterns.draw_positions: the RANDOM entries and the positions, drawn again while the
     * classifier calls them another class, at most max_attempts times */
    int64_t attempts = cl->checked >= 0 ? plan->max_attempts : 1;
    for (int64_t attempt = 0; attempt < attempts; attempt++) {
        memcpy(x->slot, plan->slots + ps->slot_off, sizeof(x->slot));
        for (int64_t r = 0; r < ps->n_random; r++) {
            const random_t *rd = &plan->randoms[ps->random_off + r];
            int64_t i = draw_int(x, 0, rd->n);
            if (rd->slot >= 0) x->slot[rd->slot] = plan->choice_slots[rd->choice_off + i];
        }
        for (int s = 0; s < N_SLOTS; s++)
            if (x->slot[s].tag == SLOT_RANDOM) abandon(x);  /* a RANDOM left unresolved */
        x->pos.n = 0;
        x->settle = attempts > 1 && attempt + 1 == attempts;  /* patterns.LAST_DRAW */
        generate(x, cl->gen);
        if (attempt + 1 < attempts && classify(x) == cl->checked) break;
    }
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
    x->chan_count = calloc((size_t)x->c, sizeof(int64_t));
    x->chan_start = calloc((size_t)x->c, sizeof(int64_t));
    if (!x->chan_count || !x->chan_start || n_prefix > 14) goto done;
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
    ctx_free(x);
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

/* Exposed for the tests: classify() of n distinct flat positions (any order) of an h x w x c
 * tensor, as its K_* index; -1 when it gives up (no positions, no memory). */
int64_t classes_classify(const int64_t *positions, int64_t n, int64_t h, int64_t w, int64_t c) {
    ctx_t *x = calloc(1, sizeof(ctx_t));
    if (!x) return -1;
    x->h = h;
    x->w = w;
    x->c = c;
    int64_t result = -1;
    x->chan_count = calloc((size_t)c, sizeof(int64_t));
    x->chan_start = calloc((size_t)c, sizeof(int64_t));
    if (x->chan_count && x->chan_start && !setjmp(x->abandon)) {
        vec_reserve(x, &x->pos, n > 0 ? n : 1);
        memcpy(x->pos.v, positions, (size_t)n * sizeof(int64_t));
        x->pos.n = n;
        sort_unique(&x->pos, true);
        result = classify(x);
    }
    ctx_free(x);
    return result;
}
