from dic.cli import main

main()
