"""synthmix: does adding generated images to a scarce real training set help a classifier?"""

__version__ = "0.1.0"
