"""Reports written from results: tables and self-contained HTML pages."""
