"""The patient report (one printable page per patient, and its PDF): what it shows, read in a fixed
number of queries."""
