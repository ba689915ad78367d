/* Watershed basins of a block of an affinity graph (see segment/basins.py for the definition).
 *
 * aff: float32 (3, D, H, W), C order; aff[0][z][y][x] is the affinity of the edge between voxel
 * (z, y, x) and (z-1, y, x) (channels 1, 2: y and x). An edge exists where both voxels are in the
 * block. The core [c0, c1) per axis holds the voxels labelled; every decision for a core voxel reads
 * at most two voxels beyond it, so a block with a halo of two voxels (where the volume goes on)
 * labels its core exactly as the whole volume would.
 *
 * No OpenMP here: chunked segmentation forks worker processes (segment/pipeline.py), and a forked
 * child must not enter an OpenMP region of a runtime its parent may have started.
 */
#include <stdint.h>
#include <stdlib.h>

typedef int64_t i64;

static const int DZ[6] = {-1, 0, 0, 1, 0, 0};
static const int DY[6] = {0, -1, 0, 0, 1, 0};
static const int DX[6] = {0, 0, -1, 0, 0, 1};

/* the affinity of the edge from v = (z, y, x) in direction d, or -1 if the edge leaves the block */
static inline float edge(const float *aff, i64 D, i64 H, i64 W, i64 z, i64 y, i64 x, int d) {
    i64 n = D * H * W;
    switch (d) {
    case 0: return z > 0 ? aff[(z * H + y) * W + x] : -1.0f;
    case 1: return y > 0 ? aff[n + (z * H + y) * W + x] : -1.0f;
    case 2: return x > 0 ? aff[2 * n + (z * H + y) * W + x] : -1.0f;
    case 3: return z + 1 < D ? aff[((z + 1) * H + y) * W + x] : -1.0f;
    case 4: return y + 1 < H ? aff[n + (z * H + y + 1) * W + x] : -1.0f;
    default: return x + 1 < W ? aff[2 * n + (z * H + y) * W + x + 1] : -1.0f;
    }
}

static inline float steepest(const float *aff, i64 D, i64 H, i64 W, i64 z, i64 y, i64 x) {
    float m = -1.0f;
    for (int d = 0; d < 6; ++d) {
        float a = edge(aff, D, H, W, z, y, x, d);
        if (a > m) m = a;
    }
    return m;
}

/* the direction of v's parent (0..5), or -1: the first steepest edge that leaves a plateau (its far
 * voxel has a steeper edge of its own), else the first steepest edge; none if no edge exceeds low */
static inline int parent(const float *aff, i64 D, i64 H, i64 W, i64 z, i64 y, i64 x, float low) {
    float m = steepest(aff, D, H, W, z, y, x);
    if (!(m > low)) return -1;
    int first = -1;
    for (int d = 0; d < 6; ++d) {
        if (edge(aff, D, H, W, z, y, x, d) != m) continue;
        if (first < 0) first = d;
        if (steepest(aff, D, H, W, z + DZ[d], y + DY[d], x + DX[d]) > m) return d;
    }
    return first;
}

static i64 find(i64 *up, i64 i) {
    while (up[i] != i) {
        up[i] = up[up[i]];
        i = up[i];
    }
    return i;
}

static void unite(i64 *up, i64 a, i64 b) {
    a = find(up, a);
    b = find(up, b);
    if (a < b) up[b] = a; else if (b < a) up[a] = b;
}

/* labels: int64 of the core's shape; 0 for a voxel without edges, else 1 + the smallest global
 * linear index (origin + block position, volume shape vshape) of its component within the core.
 * links (capacity 6 * core voxels, pairs of global linear indices: core voxel, voxel outside the
 * core) receives every watershed edge that leaves the core; returns how many. */
i64 basins(const float *aff, i64 D, i64 H, i64 W, const i64 *c0, const i64 *c1, const i64 *origin,
           const i64 *vshape, float low, float high, i64 *labels, i64 *links) {
    i64 cd = c1[0] - c0[0], ch = c1[1] - c0[1], cw = c1[2] - c0[2], count = cd * ch * cw;
    i64 *up = malloc(sizeof(i64) * (size_t)count);
    signed char *dir = malloc((size_t)count);
    i64 nlinks = 0;
    for (i64 z = 0; z < cd; ++z)
        for (i64 y = 0; y < ch; ++y)
            for (i64 x = 0; x < cw; ++x) {
                i64 i = (z * ch + y) * cw + x;
                up[i] = i;
                dir[i] = (signed char)parent(aff, D, H, W, z + c0[0], y + c0[1], x + c0[2], low);
            }
    for (i64 z = 0; z < cd; ++z)
        for (i64 y = 0; y < ch; ++y)
            for (i64 x = 0; x < cw; ++x) {
                i64 i = (z * ch + y) * cw + x;
                i64 bz = z + c0[0], by = y + c0[1], bx = x + c0[2];
                for (int d = 0; d < 6; ++d) {
                    float a = edge(aff, D, H, W, bz, by, bx, d);
                    if (!(dir[i] == d || a >= high) || a < 0.0f) continue;
                    i64 nz = z + DZ[d], ny = y + DY[d], nx = x + DX[d];
                    if (nz >= 0 && nz < cd && ny >= 0 && ny < ch && nx >= 0 && nx < cw) {
                        unite(up, i, (nz * ch + ny) * cw + nx);
                    } else {
                        i64 gz = bz + origin[0], gy = by + origin[1], gx = bx + origin[2];
                        links[2 * nlinks] = (gz * vshape[1] + gy) * vshape[2] + gx;
                        links[2 * nlinks + 1] = ((gz + DZ[d]) * vshape[1] + gy + DY[d]) * vshape[2] + gx + DX[d];
                        ++nlinks;
                    }
                }
            }
    /* every root is its component's smallest core index, so also its smallest global index; a
     * voxel without a parent has no edge above low, so none points to it either: background */
    for (i64 i = 0; i < count; ++i) {
        if (dir[i] < 0) {
            labels[i] = 0;
            continue;
        }
        i64 r = find(up, i);
        i64 rz = r / (ch * cw), ry = (r / cw) % ch, rx = r % cw;
        labels[i] = ((rz + c0[0] + origin[0]) * vshape[1] + ry + c0[1] + origin[1]) * vshape[2] + rx + c0[2] +
                    origin[2] + 1;
    }
    free(dir);
    free(up);
    return nlinks;
}

/* Size-dependent single linkage (segment/merging.py) over `count` items in their order: item i <
 * nedges is the edge between dense regions a[i], b[i]; item nedges + j adds ev_size[j] voxels to the
 * set of ev_region[j] (a merge decided elsewhere at that point of the order). Sets live in the
 * union-find `up` with `size` voxels, of which `base` were there from the start; `cold` sets may
 * reach outside the box, so their size is only a lower bound. An edge is decided when its outcome
 * is certain: two warm sets merge if either is smaller than `threshold`; a warm set smaller than
 * `threshold` merges into a cold one (an event for the cold set); two sets no smaller than the
 * threshold never merge. Otherwise both ends turn cold and the edge waits (`waiting`). A cold set
 * keeps its name (other boxes know it by it); two warm ones take the smaller. `least` is each
 * set's smallest basin id. Merges go to `merges` (surviving root, merged root) and `merged` (item
 * index); events on cold sets (input events included) to `events` as (item index, root, voxels).
 * Returns the number of merges. */
i64 single_linkage(i64 count, const i64 *items, i64 nedges, const i64 *a, const i64 *b, const i64 *ev_region,
                   const i64 *ev_size, const i64 *name, i64 *up, i64 *size, i64 *base, i64 *least,
                   unsigned char *cold, i64 threshold, i64 *merges, i64 *merged, i64 *waiting, i64 *nwaiting,
                   i64 *events, i64 *nevents) {
    i64 m = 0, w = 0, e = 0;
    for (i64 k = 0; k < count; ++k) {
        i64 i = items[k];
        if (i >= nedges) {
            i64 r = find(up, ev_region[i - nedges]), s = ev_size[i - nedges];
            size[r] += s;
            if (cold[r]) {
                events[3 * e] = i;
                events[3 * e + 1] = r;
                events[3 * e + 2] = s;
                ++e;
            } else {
                base[r] += s;
            }
            continue;
        }
        i64 ra = find(up, a[i]), rb = find(up, b[i]);
        if (ra == rb) continue;
        int small_a = size[ra] < threshold, small_b = size[rb] < threshold;
        if (!cold[ra] && !cold[rb]) {
            if (!(small_a || small_b)) continue;
            i64 keep = name[ra] < name[rb] ? ra : rb, gone = keep == ra ? rb : ra;
            up[gone] = keep;
            size[keep] += size[gone];
            base[keep] += base[gone];
            if (least[gone] < least[keep]) least[keep] = least[gone];
            ra = keep;
            rb = gone;
        } else if (cold[ra] != cold[rb] && (cold[ra] ? small_b : small_a)) {
            i64 keep = cold[ra] ? ra : rb, gone = keep == ra ? rb : ra;
            events[3 * e] = i;
            events[3 * e + 1] = keep;
            events[3 * e + 2] = size[gone];
            ++e;
            up[gone] = keep;
            size[keep] += size[gone];
            if (least[gone] < least[keep]) least[keep] = least[gone];
            ra = keep;
            rb = gone;
        } else if (!small_a && !small_b) {
            continue;
        } else {
            if (!cold[ra]) base[ra] = size[ra];
            if (!cold[rb]) base[rb] = size[rb];
            cold[ra] = cold[rb] = 1;
            waiting[w++] = i;
            continue;
        }
        merges[2 * m] = ra;
        merges[2 * m + 1] = rb;
        merged[m++] = i;
    }
    *nwaiting = w;
    *nevents = e;
    return m;
}

/* Agglomeration by mean or max affinity (segment/merging.py `agglomerate`): merge the best edge
 * while its score exceeds `threshold`. Regions are dense indices with names (a merged region takes
 * the smaller name); edge e joins ea[e], eb[e] with count, total and peak (LEVELS steps). The order
 * is (score, smaller name, larger name), largest first. An edge at the front with a `cold` end is
 * not merged: both ends turn cold. Merges go to `merges` (name pairs) and `scores`; on return,
 * `alive` marks the edges left (combined into the survivors, ends re-pointed to representatives). */
typedef struct {
    double score;
    i64 lo, hi, edge, stamp;
} entry;

static int better(const entry *x, const entry *y) {
    if (x->score != y->score) return x->score > y->score;
    if (x->lo != y->lo) return x->lo > y->lo;
    return x->hi > y->hi;
}

static void push(entry *heap, i64 *n, entry x) {
    i64 i = (*n)++;
    while (i > 0 && better(&x, &heap[(i - 1) / 2])) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = x;
}

static entry pop(entry *heap, i64 *n) {
    entry top = heap[0], last = heap[--(*n)];
    i64 i = 0;
    for (;;) {
        i64 c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && better(&heap[c + 1], &heap[c])) ++c;
        if (!better(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n > 0) heap[i] = last;
    return top;
}

typedef struct {
    i64 *items, size, capacity;
} list;

static void append(list *l, i64 x) {
    if (l->size == l->capacity) {
        l->capacity = l->capacity ? 2 * l->capacity : 4;
        l->items = realloc(l->items, sizeof(i64) * (size_t)l->capacity);
    }
    l->items[l->size++] = x;
}

static double edge_score(int kind, i64 count, i64 total, i64 peak) {
    return kind == 0 ? (double)total / (double)count / 65535.0 : (double)peak / 65535.0;
}

i64 agglomerate(i64 nregions, i64 nedges, i64 *ea, i64 *eb, i64 *count, i64 *total, i64 *peak, i64 *name,
                unsigned char *cold, int kind, double threshold, i64 *up, unsigned char *alive, i64 *merges,
                double *scores) {
    list *adj = calloc((size_t)nregions, sizeof(list));
    i64 *stamp = calloc((size_t)nedges, sizeof(i64));
    i64 *mark = malloc(sizeof(i64) * (size_t)nregions);
    i64 capacity = nedges + 16, n = 0, m = 0;
    entry *heap = malloc(sizeof(entry) * (size_t)capacity);
    for (i64 r = 0; r < nregions; ++r) {
        up[r] = r;
        mark[r] = -1;
    }
    for (i64 e = 0; e < nedges; ++e) {
        alive[e] = 1;
        append(&adj[ea[e]], e);
        append(&adj[eb[e]], e);
        i64 x = name[ea[e]], y = name[eb[e]];
        entry item = {edge_score(kind, count[e], total[e], peak[e]), x < y ? x : y, x < y ? y : x, e, 0};
        push(heap, &n, item);
    }
    while (n > 0 && heap[0].score > threshold) {
        entry top = pop(heap, &n);
        i64 e = top.edge;
        if (!alive[e] || stamp[e] != top.stamp) continue;
        i64 a = ea[e], b = eb[e];
        if (cold[a] || cold[b]) {
            cold[a] = cold[b] = 1;
            continue;
        }
        merges[2 * m] = name[a];
        merges[2 * m + 1] = name[b];
        scores[m++] = top.score;
        i64 keep = name[a] < name[b] ? a : b, gone = keep == a ? b : a;
        up[gone] = keep;
        alive[e] = 0;
        list *mine = &adj[keep], *theirs = &adj[gone];
        i64 kept = 0;
        for (i64 k = 0; k < mine->size; ++k) {  /* drop dead edges; mark the live ones' far ends */
            i64 f = mine->items[k];
            if (!alive[f]) continue;
            mine->items[kept++] = f;
            mark[ea[f] == keep ? eb[f] : ea[f]] = f;
        }
        mine->size = kept;
        for (i64 k = 0; k < theirs->size; ++k) {
            i64 f = theirs->items[k];
            if (!alive[f]) continue;
            i64 c = ea[f] == gone ? eb[f] : ea[f];
            i64 g = mark[c];
            if (g >= 0) {  /* keep and gone both border c: one edge */
                count[g] += count[f];
                total[g] += total[f];
                if (peak[f] > peak[g]) peak[g] = peak[f];
                alive[f] = 0;
            } else {
                if (ea[f] == gone) ea[f] = keep; else eb[f] = keep;
                append(mine, f);
                mark[c] = g = f;
            }
            ++stamp[g];
            if (n == capacity) {
                capacity *= 2;
                heap = realloc(heap, sizeof(entry) * (size_t)capacity);
            }
            i64 x = name[keep], y = name[c];
            entry item = {edge_score(kind, count[g], total[g], peak[g]), x < y ? x : y, x < y ? y : x, g, stamp[g]};
            push(heap, &n, item);
        }
        for (i64 k = 0; k < mine->size; ++k) {
            i64 f = mine->items[k];
            mark[ea[f] == keep ? eb[f] : ea[f]] = -1;
        }
        free(theirs->items);
        theirs->items = NULL;
        theirs->size = theirs->capacity = 0;
    }
    for (i64 r = 0; r < nregions; ++r) free(adj[r].items);
    free(adj);
    free(stamp);
    free(mark);
    free(heap);
    return m;
}
