"""Reference 2, for scale: the seed's tf-idf + LinearSVC (scikit-learn) behind the same minimal
HTTP server (common.py).

    python tfidf_server.py fit CSV TEXT_COLUMN LABEL_COLUMN OUT.pkl
    python tfidf_server.py serve OUT.pkl PORT
"""

import pickle
import sys

from common import serve

if sys.argv[1] == "fit":
    import csv

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    path, text_col, label_col, out = sys.argv[2:6]
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r[text_col].strip() and r[label_col].strip()]
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LinearSVC())
    model.fit([r[text_col] for r in rows], [r[label_col] for r in rows])
    with open(out, "wb") as f:
        pickle.dump(model, f)
    sys.exit(0)

with open(sys.argv[2], "rb") as f:
    model = pickle.load(f)
port = int(sys.argv[3])
model.predict(["warm up"])


def predict(texts):
    # LinearSVC has no probabilities; the score is the winning decision value.
    scores = model.decision_function(texts)
    labels = model.classes_[scores.argmax(axis=1)]
    return [{"label": str(l), "score": float(s.max())} for l, s in zip(labels, scores)]


serve(predict, port)
