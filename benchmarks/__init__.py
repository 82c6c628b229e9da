"""The project's benchmarks: measured side by side in one run and printed as ratios, each report naming the CPU,
its cores, the date and the package versions. Run through ``tools/benchmark.py``; not part of the installed
package (nothing in ``detector`` imports them)."""
