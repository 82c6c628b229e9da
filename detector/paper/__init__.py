"""The paper's Table 6: its rows and training recipes, and the counting convention of its columns."""
