from lorahub.cli import main

main()
