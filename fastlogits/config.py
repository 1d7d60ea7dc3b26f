"""Tunables, read at call time so tests can shrink them.

Kernels receive these values as arguments (never as globals frozen at
compile time), so changing them needs no recompilation.
"""

from fastlogits import _cpuinfo

#: Fast-math flags for every CPU kernel. Deliberately without ``nnan`` and
#: ``ninf``: -inf masks and NaN propagation are part of the contract.
#: ``reassoc`` lets reductions vectorize; ``contract`` allows FMA.
FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Pixels per tile for the CPU kernels. A tile's C scores and its scratch
#: (max, sum, label per pixel) must stay in L1/L2 while max, exp-sum and
#: the write happen.
CPU_TILE_PIXELS = 256

#: Upper bound on C * P scores in one channels-last tile (transposed into
#: scratch, or a LinearHead tile): for large C the tile has fewer pixels
#: (never fewer than 16) so it still fits in L2.
CPU_TILE_ELEMENTS = 32 * 1024

#: Upper bound on the bytes of one channels-first tile of the ops that read
#: it more than once (all but argmax and confusion_matrix: max, then the
#: exp-sum, then the write, with its scores in L2 in between), counted at
#: the precision they are computed in (4 bytes per float16 score): for
#: large C the tile has fewer pixels. Half the L2 cache (1 MiB on the
#: Intel Xeon of bench/RESULTS.md, log 68), 512 KiB where its size is
#: unknown. A tile's class rows are P pixels of C class planes, each read
#: as one run: too few pixels make runs of one or two lines, and the
#: 32 Ki-score cap the channels-first tiles had before (32 pixels at 1000
#: classes) made them 1.3-2.7x slower than channels-last. argmax and
#: confusion_matrix take ``CPU_TILE_PIXELS`` at any C.
CPU_CF_TILE_BYTES = (_cpuinfo.l2_bytes() or 1 << 20) // 2

#: Channels-first maps of at least this many classes whose class planes are
#: a multiple of 4 KiB apart (images of 1024, 65536 or 262144 pixels, ...):
#: the tile loops of the ops that read a tile more than once (softmax,
#: log_softmax, logsumexp, classify, cross_entropy) copy it into a
#: contiguous scratch first and read the copy (``cpu.tiles.load_rows``).
#: Such planes put a tile's rows in the same cache sets. Measured on an
#: Intel Xeon (bench/RESULTS.md, log 68): 1.08-1.66x at 500-3000 classes
#: on planes of 65536 and 16384 pixels, 0.92-1.03x at 400, 0.77-1.10x at
#: 150-300 (262144 and 131072 pixels); on planes not so aligned
#: 0.82-0.97x at 1000 classes and 1.00-1.06x at 3000.
CPU_CF_COPY_MIN_CLASSES = 500

#: Pixels per tile of the cross-entropy's register-block paths (both
#: layouts; still capped as each layout's tiles are), except a channels-first
#: gradient written through the L1 scratch tile (in place, or not
#: streamed straight). The per-tile work (the targets' read, the per-pixel
#: loss step, a call with a dozen scratch arrays) is paid less often in
#: longer tiles, and the blocks keep only one block's columns in L1: 1024
#: against 256 measured 1.09-1.25x for the loss and 1.13-1.15x for its
#: gradient into ``grad_out`` at 19 classes, both layouts
#: (bench/RESULTS.md, log 48).
CPU_LOSS_TILE_PIXELS = 1024

#: Channels-last inputs with contiguous rows and at least this many classes
#: go through the row kernels (:mod:`fastlogits.cpu.rowvec`: each pixel's
#: scores read as vectors and reduced across lanes); fewer classes, or rows
#: that are not contiguous, through tiles of rows transposed into (C, P)
#: scratch. This one is for the ops with exponentials (classify, softmax,
#: log_softmax, logsumexp, cross_entropy): for few classes the tiles win,
#: their exponentials fill every lane and their per-pixel epilogue (log,
#: division) is vectorized. Measured crossover (bench/RESULTS.md, log 21):
#: C between 32 and 96.
CPU_ROW_MIN_CLASSES = 64

#: The same for argmax and confusion_matrix (max and index only): the row
#: kernels win from C = 12 on (measured, log 21).
CPU_ROW_ARGMAX_MIN_CLASSES = 12

#: Contiguous channels-last rows of 8 to this many classes go through
#: blocks of rows transposed in registers (``cpu.rowblock``) for argmax,
#: classify and confusion_matrix, whatever the two thresholds above say.
#: Measured crossovers (bench/RESULTS.md, logs 26, 28 and 31): near 96
#: classes on AMD Zen 3 (AVX2); on Intel Ice Lake (AVX-512) between 48 and
#: 64 with 8-row blocks, near 96 since the blocks are 16 rows there (log
#: 31: classify 1.15x faster by blocks at 64 classes, all three ops
#: within 5 % at 96). Capped at ``cpu.tiles.SUM_BLOCK``: a block's
#: exp-sum runs in x's precision.
CPU_ROW_BLOCK_MAX_CLASSES = 96

#: The same for softmax, log_softmax and logsumexp (cpu.softmax's
#: ``expnorm_cl_blocks``), which took transposed tiles below
#: ``CPU_ROW_MIN_CLASSES`` and the row kernels from there: with 16-row
#: blocks on Ice Lake (bench/RESULTS.md, log 32) the blocks ran 1.1-1.3x
#: faster than the tiles at 11, 19 and 48 classes, and the row kernels
#: won at 96.
CPU_ROW_BLOCK_EXPNORM_MAX_CLASSES = 63

#: The same for cross_entropy without a gradient (with one, the blocks have
#: no way back): its row kernels are slower than classify's, and the
#: blocks still won at 96 classes on both CPUs (log 28).
CPU_ROW_BLOCK_XENT_MAX_CLASSES = 96

#: Channels-first maps of up to this many classes go through blocks of
#: pixels reduced in registers (``cpu.planeblock``) for the ops with
#: exponentials (classify, softmax, log_softmax, logsumexp,
#: cross_entropy); more classes through the tile loops. (Capped at
#: ``cpu.tiles.SUM_BLOCK`` whatever this says: a block's exp-sum runs in
#: x's precision.) Measured on AMD Zen 4 against the prefetching tiles
#: (bench/RESULTS.md, log 37): classify and cross_entropy 1.08-1.26x
#: faster by the blocks at 64 and 80 classes, softmax 0.92-0.99x.
CPU_PLANE_BLOCK_MAX_CLASSES = 64

#: The same for argmax and confusion_matrix: the blocks 1.2-1.8x faster
#: than the tiles at 19 and 48 classes, 0.84-0.87x at 64 and 80.
CPU_PLANE_BLOCK_ARGMAX_MAX_CLASSES = 48

#: Channels-last views with non-contiguous rows and at least this many
#: classes are copied to contiguous rows for the row kernels: a tile of 16
#: such rows no longer fits in L2.
CPU_ROW_COPY_MIN_CLASSES = 16384

#: Channels-last software prefetch: the row kernels prefetch the row this
#: many bytes ahead of the one they work on, the transposed tiles the next
#: tile (spread over the current tile's passes); 0 turns both off. The
#: hardware prefetcher alone left memory and arithmetic mostly serial
#: (bench/RESULTS.md, log 22).
CPU_PREFETCH_BYTES = 4096

#: Channels-last rows longer than this (bytes) get no software prefetch:
#: the hardware prefetcher follows a long row on its own, and a burst of
#: requests for the next row at each row's start stalled the row kernels.
#: Where that starts depends on the CPU: on AMD Zen 4 from 800 bytes
#: (argmax at 1000-32000 classes 1.6-2.4x slower with it, logsumexp and
#: cross-entropy 1.1-1.5x; at 150 classes it still helped the loss 1.16x;
#: bench/RESULTS.md, log 56), on an Intel Xeon (Sapphire Rapids class)
#: only from 4000 (there it made argmax 1.3-1.7x and the exp ops 1.1-1.3x
#: faster at 200-700 classes; log 60). Other CPUs get Intel's value.
CPU_ROW_PREFETCH_MAX_BYTES = 768 if _cpuinfo.vendor() == "amd" else 3072

#: The channels-first register blocks (``cpu.planeblock``) prefetch each
#: class plane this many bytes ahead of the block they work on; 0 turns
#: it off (bench/RESULTS.md, log 37).
CPU_PREFETCH_PLANE_BYTES = 256


#: Outputs the size of x (softmax, log_softmax, the cross-entropy
#: gradient) of at least this many bytes are written by non-temporal
#: stores (``cpu.stream``): no read of each output line before it is
#: written, nothing evicted from the caches; smaller outputs, which the
#: caller may read next from cache, by ordinary stores. 0 streams every
#: output, a huge value none (bench/RESULTS.md, log 38).
CPU_STREAM_MIN_BYTES = 16 << 20

#: Channels-last softmax and log_softmax outputs and cross-entropy
#: gradients (of at least ``CPU_STREAM_MIN_BYTES``) are streamed too when
#: their rows are at least this many bytes: row by row, each row's partial
#: first and last lines by ordinary stores (the gradient 1.07-1.17x at
#: 700-32000 classes, log 59). Measured on an Intel Xeon with AVX-512, 2
#: threads: log_softmax 1.2-1.65x at 700-32000 float32 classes, softmax
#: 1.02-1.7x; shorter rows, many partial lines, lost (softmax 0.75x at 150
#: classes), and the blocks of rows of up to 63 classes through one run of
#: lines per block too (0.78x at 19; bench/RESULTS.md, log 58).
CPU_STREAM_ROW_MIN_BYTES = 2048

#: CPU kernels on fewer scores than this run on the calling thread only
#: (waking the thread pool costs more than the work).
CPU_SERIAL_BELOW = 1 << 16

#: Upper bound on the bytes of the private (C, C) int64 histograms that the
#: CPU confusion matrix keeps (one per chunk of work, merged at the end).
CPU_CONFUSION_HIST_BYTES = 64 * 1024 * 1024

#: LinearHead, channels-last features: with N >= this ratio times C the
#: logits are dot products along the features (4 classes x 4 pixels at a
#: time); below it a tile of features is transposed first. Measured
#: crossover (argmax, 512x1024 pixels): N/C about 3 for C = 19 (N = 48:
#: transposed 18 vs dot 25 ms; N = 64: 41 vs 32 ms) and between 3.4 and 5
#: for C = 150.
CPU_HEAD_DOT_MIN_RATIO = 3

#: Threads per block for the CUDA kernels (a multiple of 32). Above 256 the
#: kernels with the most registers (LinearHead's cross_entropy: 168 per
#: thread; cross_entropy with large C: 123) no longer fit a block, and
#: their launch raises ValueError.
CUDA_THREADS_PER_BLOCK = 256

#: Above this number of classes, rows are reduced by a whole CUDA block.
CUDA_LARGE_C = 2048

#: Channels-last inputs with at most this many classes are read a thread
#: per pixel straight from memory (each thread its C contiguous scores, the
#: channels-first kernels with one pixel per row) by the ops that reduce
#: the class axis; softmax and log_softmax keep the shared tile (see
#: ``cuda.ops.plan``). Measured on an H200 (bench/RESULTS.md, 8 x 1024 x
#: 2048 x 19 float32): argmax 0.48 against 1.27 ms through the tile.
CUDA_CL_PIXEL_MAX_C = 32

#: Channels-last inputs with more classes than CUDA_CL_PIXEL_MAX_C and at
#: most this many go through a shared-memory tile (a thread per pixel);
#: larger C below CUDA_LARGE_C gets a warp per row.
CUDA_TILE_MAX_C = 32

#: Shared memory per block for that tile (bytes); fewer threads per block
#: when a tile of CUDA_THREADS_PER_BLOCK pixels would not fit.
CUDA_TILE_SHARED_BYTES = 32 * 1024

#: Cap on the grid size; the kernels grid-stride over the rest.
CUDA_MAX_BLOCKS = 16384

#: Channels-first inputs with C > CUDA_LARGE_C and fewer pixels than this
#: are reduced a block per pixel instead of a thread per pixel.
CUDA_CF_MIN_PIXELS = 16384

#: Group reductions with warp shuffles (False: the shared-memory tree that
#: the CUDA simulator always uses).
CUDA_WARP_SHUFFLE = True

#: Free output blocks the CPU backend keeps for reuse (bytes; 0: none).
#: Outputs of ``CPU_OUTPUT_POOL_MIN_BYTES`` or more come from
#: :mod:`fastlogits.pool`; when the last array using one goes, its block
#: (pages already mapped) waits for the next output of its size instead of
#: going back to the system, which would fault and zero it again: a
#: channels-first softmax of a 1024x2048x19 map took 20.8 ms allocating
#: fresh pages, 13.0 with the reuse (bench/RESULTS.md, log 50). Read at every call; lowering it drops the
#: oldest free blocks at the next call (``fastlogits.pool.release()`` drops
#: them all now).
CPU_OUTPUT_POOL_BYTES = 1 << 30

#: Smaller outputs are plain ``np.empty`` arrays: glibc already reuses
#: freed blocks under 32 MiB (its largest dynamic mmap threshold).
CPU_OUTPUT_POOL_MIN_BYTES = 32 << 20

#: Elements of float16 input converted to float32 at a time on the CPU,
#: bounding the extra memory of float16 inputs.
CPU_HALF_CHUNK_ELEMENTS = 1 << 20

#: Whether the CPU kernels read float16 x as it is and write their float16
#: outputs so (:mod:`fastlogits.cpu.scores`), where the CPU converts
#: float16 in hardware (F16C). Off, every op goes through the float32
#: chunks above (1.3-4x slower at 19-32000 classes: bench/RESULTS.md,
#: logs 65-67).
CPU_HALF_DIRECT = True

#: Shared memory the CUDA LinearHead kernels may use for W and b (bytes);
#: larger heads are staged in chunks of classes (and of features).
CUDA_HEAD_SHARED_BYTES = 32 * 1024
