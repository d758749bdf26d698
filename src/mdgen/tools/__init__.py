"""Entry points of the commands outside the DVC pipeline (`mdgen generate`, `mdgen export-dit`, `mdgen tokenizer-train`)."""
