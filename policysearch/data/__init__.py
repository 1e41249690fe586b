"""Data sets, fixed splits, fingerprints and device-resident tensors.

Everything the inner training loop reads comes from here:

* :func:`load_dataset` / :func:`from_tensors` / :func:`from_torch_dataset` give a
  :class:`RawDataset`: uint8 images (N, C, H, W) and int64 labels (or a dense task's masks / clean
  images, `policysearch.tasks`) on the CPU, an official (or carved, fixed) test split, and a sha256
  ``fingerprint`` that versions the content.
* :func:`prepare` carves a stratified validation split out of the training part with
  :func:`stratified_split`, optionally shrinks the train / test parts for proxy runs, and moves
  everything to the training device once, as a :class:`DeviceData`. Later code indexes those
  tensors in batches; no per-sample Python work happens after this point.

Data sets by name (see :data:`DATASETS`; each is one record in :mod:`policysearch.data.sources`):

===================  ===========  ==============  ===============================================
name                 images       shape           where it comes from
===================  ===========  ==============  ===============================================
``digits``           1438 + 359   1 x 8 x 8       scikit-learn's bundled ``load_digits``; it has
                                                  no official test split, so a fixed stratified
                                                  20 % test split (seed 0) is carved, independent
                                                  of the user's seed
``fashion-mnist``    60000+10000  1 x 28 x 28     the four IDX files (``.gz`` or not)
``cifar10``          50000+10000  3 x 32 x 32     the python folder ``cifar-10-batches-py``
``fashion-scenes``   5000+1000    1 x 64 x 64     segmentation: synthetic scenes of 1-3 real
                                                  Fashion-MNIST garments (mask = 1 + class)
``fashion-denoise``  60000+10000  1 x 28 x 28     restoration: Fashion-MNIST + Gaussian noise
``fashion-sr2x``     60000+10000  1 x 28 x 28     restoration: 2x down, bilinear up -> clean
===================  ===========  ==============  ===============================================

The last three are built offline from Fashion-MNIST's files (found or downloaded as Fashion-MNIST's),
with fixed seeds; training examples come only from its training split, test examples only from its
test split (:mod:`policysearch.data.derived`).

File lookup, in order (first folder holding a complete set wins): the ``data_dir`` argument,
``$POLICYSEARCH_DATA``, the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``policysearch/<name>``), and ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist``
package installs Fashion-MNIST there). Each of these folders is tried as is and with the usual
sub-folder names (``fashion-mnist``, ``cifar10``, ``cifar-10-batches-py`` ...). When nothing is
found and ``download=True``, the files are fetched from the official mirror into the user cache
and their md5 checked; without network this fails within seconds with a
:class:`~policysearch.errors.DatasetNotFoundError` that says how to get the files.

Seeds are kept apart on purpose: the train / val split follows the user's ``seed``, but a test
split is part of the data set's definition, so the digits test carve (seed 0) and the test
subsample of ``prepare(test_size=...)`` (seed 0) never move when the user's seed changes.

Modules: :mod:`~policysearch.data.raw` (RawDataset, fingerprint, array checks),
:mod:`~policysearch.data.sources` (one record per named data set), :mod:`~policysearch.data.formats`
(IDX and safe pickle readers), :mod:`~policysearch.data.derived` (the dense-task sets built from
Fashion-MNIST), :mod:`~policysearch.data.download` (fetch with checksum, safe tar
extraction), :mod:`~policysearch.data.lookup` (search order, load_dataset, dataset_status),
:mod:`~policysearch.data.user` (user tensors and datasets), :mod:`~policysearch.data.folder` (image
folders, decoded once and cached), :mod:`~policysearch.data.mask_folder` (segmentation folders:
images/ and masks/), :mod:`~policysearch.data.inputs` (``--data SOURCE``: folder, .npz,
module:function), :mod:`~policysearch.data.preprocess` (the normalisation every model input gets),
:mod:`~policysearch.data.splits` (split arithmetic), :mod:`~policysearch.data.resident` (DeviceData, prepare).

Your own data: `load_data` (a folder, an ``.npz`` or ``module:function``), `from_tensors` or
`from_torch_dataset`, then `prepare`.
"""

from __future__ import annotations

from policysearch.data.folder import from_image_folder
from policysearch.data.inputs import from_function, from_npz, load_data
from policysearch.data.lookup import dataset_status, load_dataset
from policysearch.data.mask_folder import from_mask_folder
from policysearch.data.preprocess import NORMALIZATIONS, Normalization
from policysearch.data.raw import ArrayLike, RawDataset
from policysearch.data.resident import DeviceData, prepare
from policysearch.data.sources import DATASETS
from policysearch.data.splits import stratified_split
from policysearch.data.user import from_tensors, from_torch_dataset

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "ArrayLike",
    "DeviceData",
    "Normalization",
    "RawDataset",
    "dataset_status",
    "from_function",
    "from_image_folder",
    "from_mask_folder",
    "from_npz",
    "from_tensors",
    "from_torch_dataset",
    "load_data",
    "load_dataset",
    "prepare",
    "stratified_split",
]
