// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011; Random123's
// philox4x32_10) and the layout of tinyvae's random streams, word for word as tinyvae/rng.py (the
// reference): element e of example i at step t is word e % 4 of the block at counter
// (e / 4, i, t mod 2^32, t / 2^32); a word w is the uniform (w + 1/2) 2^-32 (double, in (0, 1)); a
// block's word pairs (0, 1) and (2, 3) are Box-Muller normals, r cos(2 pi u_b) and r sin(2 pi u_b) with
// r = sqrt(-2 log u_a), in double.
#pragma once

struct PhiloxBlock {
    unsigned int w[4];
};

__device__ __forceinline__ PhiloxBlock philox4x32_10_block(unsigned int c0, unsigned int c1, unsigned int c2,
                                                           unsigned int c3, unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned long long p0 = 0xD2511F53ull * c0, p1 = 0xCD9E8D57ull * c2;
        const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0, n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned int)p1;
        c3 = (unsigned int)p0;
        c0 = n0;
        c2 = n2;
    }
    PhiloxBlock out;
    out.w[0] = c0;
    out.w[1] = c1;
    out.w[2] = c2;
    out.w[3] = c3;
    return out;
}

// The block of element block `q` of `example` at `step`.
__device__ __forceinline__ PhiloxBlock philox_at(long q, long example, unsigned long long step, unsigned int k0,
                                                 unsigned int k1) {
    return philox4x32_10_block((unsigned int)q, (unsigned int)example, (unsigned int)step,
                               (unsigned int)(step >> 32), k0, k1);
}

__device__ __forceinline__ double philox_uniform(unsigned int w) { return ((double)w + 0.5) * 2.3283064365386963e-10; }

// The normal of word j of a block.
__device__ __forceinline__ double philox_normal(const PhiloxBlock& b, int j) {
    const int a = j & 2;
    const double r = sqrt(-2.0 * log(philox_uniform(b.w[a])));
    const double angle = 6.283185307179586 * philox_uniform(b.w[a + 1]);
    return (j & 1) ? r * sin(angle) : r * cos(angle);
}
