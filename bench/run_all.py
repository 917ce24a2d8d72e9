"""The quick benchmarks (seconds each). The photo recipe takes minutes: python -m bench.bench_photos."""

from bench import bench_allocator, bench_decode, bench_index

if __name__ == "__main__":
    print("== index ==")
    bench_index.main([])
    print("\n== allocator ==")
    bench_allocator.main([])
    print("\n== decode ==")
    bench_decode.main([])
