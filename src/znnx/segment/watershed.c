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
 * threshold never merge. Otherwise both ends turn cold and the edge waits (`waiting`). Merges go
 * to `merges` (root pairs) and `merged` (item index); events on cold sets (input events included)
 * to `events` as (item index, root, voxels). Returns the number of merges. */
i64 single_linkage(i64 count, const i64 *items, i64 nedges, const i64 *a, const i64 *b, const i64 *ev_region,
                   const i64 *ev_size, const i64 *name, i64 *up, i64 *size, i64 *base, unsigned char *cold,
                   i64 threshold, i64 *merges, i64 *merged, i64 *waiting, i64 *nwaiting, i64 *events,
                   i64 *nevents) {
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
        } else if (cold[ra] != cold[rb] && (cold[ra] ? small_b : small_a)) {
            i64 keep = cold[ra] ? ra : rb, gone = keep == ra ? rb : ra;
            events[3 * e] = i;
            events[3 * e + 1] = keep;
            events[3 * e + 2] = size[gone];
            ++e;
            up[gone] = keep;
            size[keep] += size[gone];
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
