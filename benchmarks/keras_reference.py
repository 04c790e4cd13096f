"""The original O'TRAIN's way, for benchmarks/train_infer.py: the same network in Keras 2 /
TensorFlow on the CPU, ``model.fit(batch_size=1024)`` for one epoch on the same images.

Run by train_infer.py with a separate Python that has TensorFlow (never a dependency of otrain):
``python keras_reference.py images.npz epochs`` prints one JSON line (seconds per epoch).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras import layers

    data = np.load(sys.argv[1])
    x = np.transpose(data["images"], (0, 2, 3, 1))  # NHWC, as the original
    y = keras.utils.to_categorical(data["labels"], 2)
    n_val = int(0.15 * len(x))
    h, w, c = x.shape[1:]
    model = keras.Sequential([
        keras.Input((h, w, c)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.AveragePooling2D(2), layers.Dropout(0.3),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2), layers.Dropout(0.3),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.Conv2D(256, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(512, activation="relu"), layers.Dropout(0.3),
        layers.Dense(256, activation="relu"), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    epochs = int(sys.argv[2])
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x[n_val:], y[n_val:], batch_size=1024, epochs=1, verbose=0,
                  validation_data=(x[:n_val], y[:n_val]))
        times.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"keras_epoch_seconds": times, "n_train": len(x) - n_val,
                      "tensorflow": tf.__version__, "keras": keras.__version__}))


if __name__ == "__main__":
    main()
