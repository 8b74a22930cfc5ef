#!/usr/bin/env python3
"""tf-idf + LinearSVC baseline for a `text,category` data folder: how hard is this data?

Fits on train.csv (word 1-2 grams + char 2-5 grams, sublinear tf), picks nothing on val, and prints
accuracy and macro-F1 on val.csv and test.csv (whichever exist). Usage:
  baseline_tfidf.py DATA_DIR [--text-column text] [--label-column category]
"""
import argparse
import os
import sys

import pandas as pd
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="category")
    a = p.parse_args()
    read = lambda name: pd.read_csv(os.path.join(a.data_dir, name), keep_default_na=False)
    train = read("train.csv")
    word = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(lowercase=True, analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    x_train = hstack([word.fit_transform(train[a.text_column]), char.fit_transform(train[a.text_column])])
    clf = LinearSVC(C=1.0).fit(x_train, train[a.label_column])
    for name in ("val.csv", "test.csv"):
        if not os.path.exists(os.path.join(a.data_dir, name)):
            continue
        df = read(name)
        x = hstack([word.transform(df[a.text_column]), char.transform(df[a.text_column])])
        pred = clf.predict(x)
        acc = accuracy_score(df[a.label_column], pred)
        f1 = f1_score(df[a.label_column], pred, average="macro")
        print(f"{name:9s} rows={len(df):6d} accuracy={acc:.4f} f1_macro={f1:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
