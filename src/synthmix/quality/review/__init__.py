"""`synthmix review`: a local page where a person accepts or rejects synthetic images, class by class.

The decisions go to vetting/decisions.csv through synthmix.data.vetting, the file's one owner. The modules,
each importing only those after it: server (HTTP: routes, checks, start and stop) -> page (the HTML
page's content) -> catalog (which images the project's manifests list: the only files ever served).
"""
