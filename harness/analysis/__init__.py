"""Stage 7, analysis: figures from frames (stats, reuse, connector time, intervals, the rounds table,
cell status). Pure: no file I/O, no printing, no network; every function takes frames and returns them."""
