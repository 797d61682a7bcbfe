"""Write a news-topic CSV shaped like the classic AG News files, for trying `peftpipe init`:
no header row, a class id (1..4) first, then a title and a description.

The rows are synthetic (word lists per topic, seeded), not real news: a stand-in with the
file's shape, since no news corpus ships on PyPI. Usage:

    python examples/make_news_csv.py news.csv [--rows-per-class 300]
"""

import csv
import random
import sys

TOPICS = {
    1: "government election minister president war talks border embassy treaty parliament".split(),
    2: "match season coach team goal league championship player final tournament".split(),
    3: "shares profit market quarter investors bank earnings stocks merger revenue".split(),
    4: "software internet computer researchers space chip users network phone launch".split(),
}
COMMON = "the a of in to and on for with new after over says report".split()


def rows(per_class: int, seed: int = 0):
    rng = random.Random(seed)
    for topic, words in TOPICS.items():
        for _ in range(per_class):
            title = " ".join(rng.choice(words + COMMON) for _ in range(rng.randint(3, 7))).capitalize()
            description = " ".join(rng.choice(words + COMMON * 2) for _ in range(rng.randint(10, 25)))
            yield topic, title, description.capitalize() + "."


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "news.csv"
    per_class = int(sys.argv[sys.argv.index("--rows-per-class") + 1]) if "--rows-per-class" in sys.argv else 300
    lines = list(rows(per_class))
    random.Random(1).shuffle(lines)
    with open(path, "w", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC).writerows(lines)
    print(f"wrote {len(lines)} rows to {path}")
