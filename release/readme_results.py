"""Write the README's results table from the committed reference (metrics/details/evaluate.json, the full
figures behind metrics/evaluate.json, and data/reference/default_run.json), so that the table cannot drift
from the files.

    python release/readme_results.py          # rewrites the table between its markers in README.md
"""
from pathlib import Path

from mdgen import reference
from mdgen.io import read_json


def main() -> None:
    table = reference.results_table(read_json("metrics/details/evaluate.json"),
                                    read_json("data/reference/default_run.json"))
    readme = Path("README.md")
    readme.write_text(reference.replace_table(readme.read_text(), table))
    print(table)


if __name__ == "__main__":
    main()
