"""The data wing (chapter 01, and the batches of chapter 05): text in, token batches out.

    rows.py        the row protocol every source provides (DocumentRows), the train/validation split
    sources.py     where documents come from: RedPajama from the Hub, Shakespeare offline, your own files
    textfiles.py   a .txt file of any size as seekable ~64 KiB pieces
    mixing.py      mix several streams by byte share, deterministically and resumably
    mixed_rows.py  RedPajama's subsets as one mixed row stream
    batching.py    documents -> tokens -> packed windows -> (x, y) batches, with a resumable position
    pipeline.py    batches made in a background worker behind a bounded queue

It imports only ``minigpt_helpers.config``: every other wing stands on this one.
"""
