from executor.cli import main

main()
