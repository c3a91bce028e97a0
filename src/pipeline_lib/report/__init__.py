"""Report: tables, figures, summaries, spread over sets and seeds, tuning, timings and the generated documents."""
