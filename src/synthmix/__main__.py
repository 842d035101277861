from synthmix.cli import main

main()
