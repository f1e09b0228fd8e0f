"""The hashtag-to-synset dataset build (MAWS §4.1): image+caption shards in, multi-label
WordNet-synset shards out, as three scale-out phases (count, vocab, write) and a finalize step.
"""
