from transfer.classification.cli import main

main()
